"""The shared encoder: adapter outputs, concatenated, through one transformer stack."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from fairseq.models import FairseqEncoder
from fairseq.models.transformer import TransformerConfig
from fairseq.modules import FairseqDropout, LayerNorm
from fairseq.modules.transformer_layer import TransformerEncoderLayerBase
from torch import Tensor

from .adapters import AdapterOutput, Modality


class UniversalEncoder(FairseqEncoder):
    """Image patches (one sequence per IMAGE slot) then the text sequence, each with
    its modality's type embedding, through one transformer stack.

    Args:
        cfg: fairseq transformer config (``cfg.encoder`` sizes the layers).
        dictionary: the shared dictionary.
        adapters: ``"text"`` -> the text adapter, plus ``adapter_key(adaptor)`` -> an
            image adapter for each image adaptor the tasks use.
    """

    def __init__(self, cfg: TransformerConfig, dictionary, adapters: nn.ModuleDict):
        super().__init__(dictionary)
        dim = cfg.encoder.embed_dim
        self.adapters = adapters
        self.type_embedding = nn.Embedding(len(Modality), dim)
        # at the scale of the token embeddings: an N(0, 1) offset, the same on every text
        # token, would drown which token it is once the embeddings are layer-normalized
        nn.init.normal_(self.type_embedding.weight, std=dim ** -0.5)
        self.layernorm_embedding = LayerNorm(dim)
        self.dropout = FairseqDropout(cfg.dropout, module_name=self.__class__.__name__)
        self.layers = nn.ModuleList(TransformerEncoderLayerBase(cfg) for _ in range(cfg.encoder.layers))
        self.layer_norm = LayerNorm(dim) if cfg.encoder.normalize_before else None
        self.max_source_positions = cfg.max_source_positions

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None,
                images: Optional[Dict[str, Tensor]] = None,
                image_slots: Optional[Dict[str, Tensor]] = None) -> Dict[str, List[Tensor]]:
        """Args:
            src_tokens: ``B x T`` text tokens.
            src_lengths: unused (padding is read from the tokens).
            images: adapter key -> ``N x 3 x S x S`` uint8 images that adapter embeds.
            image_slots: adapter key -> ``N x 2`` (row, slot) of each of those images.
        """
        batch = src_tokens.size(0)
        outputs = [self._embed_images(key, pixels, image_slots[key], batch)
                   for key, pixels in (images or {}).items()]
        outputs.append(self._typed(self.adapters[Modality.TEXT.value](src_tokens), Modality.TEXT))
        x = torch.cat([out.embeddings for out in outputs], dim=1)
        padding_mask = torch.cat([out.padding_mask for out in outputs], dim=1)
        x = self.dropout(self.layernorm_embedding(x))
        x = x.transpose(0, 1)  # T x B x C, as fairseq's layers expect
        for layer in self.layers:
            x = layer(x, encoder_padding_mask=padding_mask if padding_mask.any() else None)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return {
            "encoder_out": [x],
            "encoder_padding_mask": [padding_mask],
            "encoder_embedding": [],
            "encoder_states": [],
            "src_tokens": [],
            "src_lengths": [],
        }

    def _embed_images(self, key: str, pixels: Tensor, slots: Tensor, batch: int) -> AdapterOutput:
        """``B x (K * P) x C`` patches of each row's K image slots; slots a row lacks (a
        task without images in a mixed batch) are padding."""
        if key not in self.adapters:
            image_keys = [k for k in self.adapters if k != Modality.TEXT.value]
            raise ValueError(f"this model has no '{key}' adapter (it has {image_keys or 'none'})")
        adapter = self.adapters[key]
        out = adapter(pixels)  # N x P x C
        patches, dim = out.embeddings.shape[1:]
        width = (int(slots[:, 1].max()) + 1) * patches
        rows = slots[:, :1].expand(-1, patches)
        columns = slots[:, 1:] * patches + torch.arange(patches, device=slots.device)
        embeddings = out.embeddings.new_zeros(batch, width, dim)
        embeddings[rows, columns] = out.embeddings
        padding_mask = torch.ones(batch, width, dtype=torch.bool, device=embeddings.device)
        padding_mask[rows, columns] = out.padding_mask
        return self._typed(AdapterOutput(embeddings, padding_mask), adapter.modality)

    def _typed(self, out: AdapterOutput, modality: Modality) -> AdapterOutput:
        type_id = list(Modality).index(modality)
        return out._replace(embeddings=out.embeddings + self.type_embedding.weight[type_id])

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        return {
            "encoder_out": [encoder_out["encoder_out"][0].index_select(1, new_order)],
            "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)],
            "encoder_embedding": [],
            "encoder_states": [],
            "src_tokens": [],
            "src_lengths": [],
        }

    def max_positions(self) -> int:
        return self.max_source_positions
