"""The shared encoder: adapter outputs, concatenated, through one transformer stack."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from fairseq.models import FairseqEncoder
from fairseq.models.transformer import TransformerConfig
from fairseq.modules import FairseqDropout, LayerNorm
from fairseq.modules.transformer_layer import TransformerEncoderLayerBase
from torch import Tensor

from .adapters import Modality


class UniversalEncoder(FairseqEncoder):
    """Args:
        cfg: fairseq transformer config (``cfg.encoder`` sizes the layers).
        dictionary: the shared dictionary.
        adapters: one adapter per modality, keyed by ``Modality`` value; each reads
            its own ``net_input`` key (``adapter.input_key``).
    """

    def __init__(self, cfg: TransformerConfig, dictionary, adapters: nn.ModuleDict):
        super().__init__(dictionary)
        dim = cfg.encoder.embed_dim
        self.adapters = adapters
        self.type_embedding = nn.Embedding(len(Modality), dim)
        self.layernorm_embedding = LayerNorm(dim)
        self.dropout = FairseqDropout(cfg.dropout, module_name=self.__class__.__name__)
        self.layers = nn.ModuleList(TransformerEncoderLayerBase(cfg) for _ in range(cfg.encoder.layers))
        self.layer_norm = LayerNorm(dim) if cfg.encoder.normalize_before else None
        self.max_source_positions = cfg.max_source_positions

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None,
                **modality_inputs) -> Dict[str, List[Tensor]]:
        inputs = dict(modality_inputs, src_tokens=src_tokens)
        segments, masks = [], []
        for type_id, modality in enumerate(Modality):
            adapter = self.adapters[modality.value] if modality.value in self.adapters else None
            if adapter is None or inputs.get(adapter.input_key) is None:
                continue
            out = adapter(inputs[adapter.input_key])
            segments.append(out.embeddings + self.type_embedding.weight[type_id])
            masks.append(out.padding_mask)
        x = self.dropout(self.layernorm_embedding(torch.cat(segments, dim=1)))
        padding_mask = torch.cat(masks, dim=1)
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
