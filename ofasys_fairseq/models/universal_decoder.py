"""The shared decoder: fairseq's transformer decoder layers over token embeddings, or over
what a continuous-output modality's pre-net makes of its previous frames."""
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.models import FairseqIncrementalDecoder
from fairseq.models.transformer import TransformerConfig
from fairseq.modules import FairseqDropout, LayerNorm, PositionalEmbedding
from torch import Tensor

from .cached_attention import DecoderLayer


class UniversalDecoder(FairseqIncrementalDecoder):
    """A pre-norm transformer decoder (fairseq's layers and parameter names, so checkpoints
    of fairseq's ``TransformerDecoderBase`` configuration load), whose input at each
    position is a token embedding, or, where ``decoder_frames`` says so, the embedding a
    continuous-output modality's head gives a frame. Token logits come from the tied
    output projection; continuous outputs from ``output_heads``.

    Args:
        cfg: fairseq transformer config (``cfg.decoder`` sizes the layers).
        dictionary: the shared dictionary.
        embed_tokens: the shared vocabulary embedding (also the output projection).
        output_heads: modality name -> the head of a continuous output the model decodes.
    """

    def __init__(self, cfg: TransformerConfig, dictionary, embed_tokens: nn.Embedding,
                 output_heads: nn.ModuleDict):
        super().__init__(dictionary)
        dim = cfg.decoder.embed_dim
        self.embed_tokens = embed_tokens
        self.padding_idx = embed_tokens.padding_idx
        self.max_target_positions = cfg.max_target_positions
        self.embed_positions = PositionalEmbedding(cfg.max_target_positions, dim,
                                                   self.padding_idx, learned=True)
        self.layernorm_embedding = LayerNorm(dim)
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=self.__class__.__name__)
        self.layers = nn.ModuleList(DecoderLayer(cfg)
                                    for _ in range(cfg.decoder.layers))
        self.layer_norm = LayerNorm(dim) if cfg.decoder.normalize_before else None
        self.output_projection = nn.Linear(dim, len(dictionary), bias=False)
        self.output_projection.weight = embed_tokens.weight
        self.output_heads = output_heads
        self._future_mask = torch.empty(0)

    def forward(self, prev_output_tokens: Tensor,
                encoder_out: Optional[Dict[str, List[Tensor]]] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                features_only: bool = False,
                decoder_frames: Optional[Mapping[str, Any]] = None, **unused):
        """Args:
            prev_output_tokens: ``B x T`` decoder inputs (a placeholder token where a frame
                is read instead).
            encoder_out: the encoder's output.
            incremental_state: the decoding cache (only the last position is computed).
            features_only: return the final states, not token logits.
            decoder_frames: ``{"modality": name, "frames": B x T x F, "mask": B x T}``: the
                positions whose input is a frame, read through that modality's head.
        """
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state,
                                         decoder_frames)
        return (x if features_only else self.output_layer(x)), extra

    def extract_features(self, prev_output_tokens: Tensor, encoder_out=None,
                         incremental_state=None, decoder_frames=None, **unused):
        positions = self.embed_positions(prev_output_tokens, incremental_state=incremental_state)
        tokens, frames, frame_mask = prev_output_tokens, None, None
        if decoder_frames is not None:
            frames, frame_mask = decoder_frames["frames"], decoder_frames["mask"]
        if incremental_state is not None:  # the cache holds the earlier positions
            tokens, positions = tokens[:, -1:], positions[:, -1:]
            if frames is not None:
                frames, frame_mask = frames[:, -1:], frame_mask[:, -1:]
        x = self.embed_tokens(tokens)
        if frames is not None:
            # frames in the model's precision (a half model decodes from float frames)
            embedded = self.output_heads[decoder_frames["modality"]].embed(frames.to(x.dtype))
            x = torch.where(frame_mask.unsqueeze(-1), embedded, x)
        x = self.dropout_module(self.layernorm_embedding(x + positions))
        x = x.transpose(0, 1)  # T x B x C
        padding_mask = tokens.eq(self.padding_idx)
        encoder_states, encoder_padding = None, None
        if encoder_out is not None:
            encoder_states = encoder_out["encoder_out"][0]
            encoder_padding = encoder_out["encoder_padding_mask"][0]
        for layer in self.layers:
            x, _, _ = layer(x, encoder_states, encoder_padding, incremental_state,
                            self_attn_mask=(self._buffered_future_mask(x)
                                            if incremental_state is None else None),
                            self_attn_padding_mask=padding_mask if padding_mask.any() else None)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x.transpose(0, 1), {"attn": [None], "inner_states": None}

    def output_layer(self, features: Tensor) -> Tensor:
        """Token logits of decoder states."""
        return self.output_projection(features)

    def max_positions(self) -> int:
        return min(self.max_target_positions, self.embed_positions.max_positions)

    def _buffered_future_mask(self, x: Tensor) -> Tensor:
        length = x.size(0)
        if self._future_mask.size(0) < length or self._future_mask.device != x.device:
            self._future_mask = torch.triu(utils.fill_with_neg_inf(torch.zeros(length, length)), 1)
        self._future_mask = self._future_mask.to(x)
        return self._future_mask[:length, :length]

    def upgrade_state_dict_named(self, state_dict, name: str):
        """Checkpoints written with fairseq's own decoder carry its format ``version``."""
        state_dict.pop(f"{name}.version" if name else "version", None)
        return state_dict
