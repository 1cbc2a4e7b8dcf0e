"""The shared encoder: adapter outputs, concatenated, through one transformer stack."""
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from fairseq.models import FairseqEncoder
from fairseq.models.transformer import TransformerConfig
from fairseq.modules import FairseqDropout, LayerNorm
from fairseq.modules.transformer_layer import TransformerEncoderLayerBase
from torch import Tensor

from ..modalities import get_modality
from ..modalities.base import MAX_FEATURE_SLOTS, AdapterOutput

TOKENS_ADAPTER = "tokens"  # the token stream's adapter (and its type embedding, row 0)


class UniversalEncoder(FairseqEncoder):
    """Feature slots (images, ...) then the token stream, through one transformer stack.

    Feature slot k of every row goes in block k (as wide as the widest row's slot k;
    rows without one are padding), with its modality's type embedding and slot
    embedding k, so two slots of one modality stay distinguishable; the token stream
    gets the tokens' type embedding.

    Args:
        cfg: fairseq transformer config (``cfg.encoder`` sizes the layers).
        dictionary: the shared dictionary.
        adapters: ``TOKENS_ADAPTER`` -> the token adapter, plus each feature adapter by
            its key.
        modality_of: feature adapter key -> the modality it embeds.
    """

    def __init__(self, cfg: TransformerConfig, dictionary, adapters: nn.ModuleDict,
                 modality_of: Mapping[str, str]):
        super().__init__(dictionary)
        dim = cfg.encoder.embed_dim
        self.adapters = adapters
        self.modality_of = dict(modality_of)
        # rows by name, not by registration: plug-ins imported in another order keep them
        types = [TOKENS_ADAPTER] + sorted(set(self.modality_of.values()))
        self.type_index = {name: i for i, name in enumerate(types)}
        self.type_embedding = nn.Embedding(len(types), dim)
        # at the scale of the token embeddings: an N(0, 1) offset, the same on every text
        # token, would drown which token it is once the embeddings are layer-normalized
        nn.init.normal_(self.type_embedding.weight, std=dim ** -0.5)
        # only with feature adapters: a parameter no step uses would stall DDP
        self.slot_embedding = nn.Embedding(MAX_FEATURE_SLOTS, dim) if modality_of else None
        if self.slot_embedding is not None:
            nn.init.normal_(self.slot_embedding.weight, std=dim ** -0.5)
        self.layernorm_embedding = LayerNorm(dim)
        self.dropout = FairseqDropout(cfg.dropout, module_name=self.__class__.__name__)
        self.layers = nn.ModuleList(TransformerEncoderLayerBase(cfg) for _ in range(cfg.encoder.layers))
        self.layer_norm = LayerNorm(dim) if cfg.encoder.normalize_before else None
        self.max_source_positions = cfg.max_source_positions

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None,
                features: Optional[Sequence[Dict[str, Any]]] = None) -> Dict[str, List[Tensor]]:
        """Args:
            src_tokens: ``B x T`` tokens of the token stream.
            src_lengths: unused (padding is read from the tokens).
            features: the feature groups of the batch (see ``data/features.py``).
        """
        outputs, ctc_mask = [], None
        if features:
            embedded, ctc_mask = self._embed_features(features, src_tokens.size(0))
            outputs.append(embedded)
        tokens = self.adapters[TOKENS_ADAPTER](src_tokens)
        outputs.append(tokens._replace(embeddings=tokens.embeddings + self.type_embedding.weight[0]))
        x = torch.cat([out.embeddings for out in outputs], dim=1)
        padding_mask = torch.cat([out.padding_mask for out in outputs], dim=1)
        if ctc_mask is not None:  # widened to every position: the text stream has none
            ctc_mask = torch.cat([ctc_mask, tokens.padding_mask.new_zeros(
                tokens.padding_mask.shape)], dim=1)
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
            # B x T: positions of inputs a CTC loss may align a text target to
            "ctc_mask": [] if ctc_mask is None else [ctc_mask],
        }

    def _embed_features(self, groups: Sequence[Dict[str, Any]], batch: int):
        """``B x W x C``: block k holds each row's feature slot k; and ``B x W`` True at
        the (unpadded) positions of modalities that a CTC loss may align text to."""
        embedded = []  # (slots, embeddings, padding mask) per group
        for group in groups:
            key = group["adapter"]
            if key not in self.modality_of:
                raise ValueError(f"this model has no '{key}' adapter (it has "
                                 f"{list(self.modality_of) or 'none'})")
            out = self.adapters[key](**group["inputs"])  # N x P x C
            slots = group["slots"]
            typed = (out.embeddings + self.type_embedding.weight[self.type_index[self.modality_of[key]]]
                     + self.slot_embedding(slots[:, 1])[:, None])
            embedded.append((slots, typed, out.padding_mask))
        widths = [0] * MAX_FEATURE_SLOTS
        for slots, typed, _ in embedded:
            for k in slots[:, 1].unique().tolist():
                widths[k] = max(widths[k], typed.size(1))
        starts = torch.tensor([0] + widths[:-1], device=embedded[0][1].device).cumsum(0)
        x = embedded[0][1].new_zeros(batch, sum(widths), embedded[0][1].size(-1))
        padding_mask = torch.ones(batch, sum(widths), dtype=torch.bool, device=x.device)
        ctc_mask = torch.zeros_like(padding_mask)
        for (slots, typed, mask), group in zip(embedded, groups):
            rows = slots[:, :1].expand(-1, typed.size(1))
            columns = starts[slots[:, 1]][:, None] + torch.arange(typed.size(1), device=x.device)
            x[rows, columns] = typed
            padding_mask[rows, columns] = mask
            if get_modality(self.modality_of[group["adapter"]]).ctc_alignable:
                ctc_mask[rows, columns] = ~mask
        return AdapterOutput(x, padding_mask), ctc_mask

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

    # The type rows' names travel with them in the state dict: a fine-tuning run that reads
    # other modalities than its checkpoint maps rows by name (``type_rows_by_name``).
    def get_extra_state(self) -> Dict[str, List[str]]:
        return {"type_names": list(self.type_index)}

    def set_extra_state(self, state: Mapping[str, List[str]]) -> None:
        if list(state["type_names"]) != list(self.type_index):
            raise ValueError(f"the checkpoint's encoder embeds {state['type_names']}, this model "
                             f"{list(self.type_index)}")

    def type_rows_by_name(self, state_dict, prefix: str) -> List[str]:
        """In ``state_dict`` (a checkpoint to fine-tune), this model's type rows: the
        checkpoint's row of each name it has, this model's fresh row for the others,
        whose names are returned."""
        extra, types = f"{prefix}_extra_state", f"{prefix}type_embedding.weight"
        saved_names = state_dict.get(extra, {}).get("type_names")
        if saved_names is None:  # written before the names were saved: only row 0 is known
            saved_names = [TOKENS_ADAPTER]
        saved_rows = dict(zip(saved_names, state_dict[types]))
        state_dict[types] = torch.stack([saved_rows.get(name, own) for name, own in
                                         zip(self.type_index, self.type_embedding.weight)])
        state_dict[extra] = self.get_extra_state()
        return [name for name in self.type_index if name not in saved_rows]

    def upgrade_state_dict_named(self, state_dict, name: str):
        """Checkpoints written before modalities were plug-ins named the token adapter
        ``text``, had a (TEXT, IMAGE) type row whatever the model read, and no slot
        embeddings: rename, keep the rows this model has, add zero slot embeddings (which
        leave such a model computing what it did). Checkpoints written before the type
        rows' names were saved have this model's rows (it was built from their settings)."""
        prefix = f"{name}." if name else ""
        state_dict.setdefault(f"{prefix}_extra_state", self.get_extra_state())
        old = f"{prefix}adapters.text."
        old_keys = [key for key in state_dict if key.startswith(old)]
        if not old_keys:
            return state_dict
        for key in old_keys:
            state_dict[f"{prefix}adapters.{TOKENS_ADAPTER}.{key[len(old):]}"] = state_dict.pop(key)
        types = f"{prefix}type_embedding.weight"
        state_dict[types] = state_dict[types][:self.type_embedding.num_embeddings]
        if self.slot_embedding is not None:
            state_dict[f"{prefix}slot_embedding.weight"] = torch.zeros_like(
                self.slot_embedding.weight)
        return state_dict
