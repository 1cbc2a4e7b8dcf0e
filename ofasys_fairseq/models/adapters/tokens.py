"""Token adapter: the text stream's token ids -> embeddings plus learned positions."""
import torch.nn as nn
from fairseq.modules import PositionalEmbedding
from torch import Tensor

from ...modalities.base import AdapterOutput


class TokenAdapter(nn.Module):
    """Embeds the encoder's token stream: the instruction's literal text and the tokens
    of every token-like slot, merged into one sequence (as OFA).

    Args:
        embed_tokens: the vocabulary embedding, shared with the decoder input and
            its output projection.
        max_positions: the longest sequence to embed.
    """

    def __init__(self, embed_tokens: nn.Embedding, max_positions: int):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.padding_idx = embed_tokens.padding_idx
        self.embed_positions = PositionalEmbedding(
            max_positions, embed_tokens.embedding_dim, self.padding_idx, learned=True)

    def forward(self, tokens: Tensor) -> AdapterOutput:
        x = self.embed_tokens(tokens) + self.embed_positions(tokens)
        return AdapterOutput(x, tokens.eq(self.padding_idx))
