"""The OFASys model: modality adapters and output heads around one BART-style
encoder-decoder."""
import logging
from dataclasses import dataclass, field
from typing import Any, List, Mapping

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.dataclass import ChoiceEnum
from fairseq.models import (FairseqEncoderDecoderModel, register_model,
                            register_model_architecture)
from fairseq.models.transformer import TransformerConfig
from fairseq.models.transformer.transformer_config import DecoderConfig, EncDecBaseConfig
from omegaconf import II

from ..modalities import ModalityModelOptions, get_modality, registered_modalities
from ..modalities.base import CONTINUOUS, FEATURES
from .adapters import TokenAdapter
from .dropout import use_uniform_dropout
from .universal_decoder import UniversalDecoder
from .universal_encoder import TOKENS_ADAPTER, UniversalEncoder


logger = logging.getLogger(__name__)


@dataclass
class OFASysConfig(ModalityModelOptions):
    """The shared encoder-decoder's sizes, plus the modalities' model options
    (``--resnet-depth``, ...)."""
    embed_dim: int = field(default=256, metadata={"help": "model width (encoder and decoder)"})
    ffn_embed_dim: int = field(default=1024, metadata={"help": "feed-forward width"})
    attention_heads: int = field(default=4, metadata={"help": "attention heads per layer"})
    encoder_layers: int = field(default=4, metadata={"help": "encoder layers"})
    decoder_layers: int = field(default=4, metadata={"help": "decoder layers"})
    dropout: float = field(default=0.1, metadata={"help": "dropout probability"})
    attention_dropout: float = field(default=0.0, metadata={"help": "attention dropout"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    activation_fn: ChoiceEnum(utils.get_available_activation_fns()) = field(
        default="gelu", metadata={"help": "FFN activation"})
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")


# name -> (width, encoder layers, decoder layers, heads): the OFASys model sizes; each
# modality adds its own defaults per size (``Modality.architecture_defaults``)
ARCHITECTURES = {
    "ofasys_tiny": (256, 4, 4, 4),
    "ofasys_medium": (512, 4, 4, 8),
    "ofasys_base": (768, 6, 6, 12),
    "ofasys_large": (1024, 12, 12, 16),
    "ofasys_huge": (1280, 24, 12, 16),
}


def transformer_config(cfg: OFASysConfig) -> TransformerConfig:
    """fairseq's layer config for our sizes: pre-norm, learned positions, BART-style
    layernorm on embeddings, unscaled embeddings, tied decoder input/output."""
    sides = dict(embed_dim=cfg.embed_dim, ffn_embed_dim=cfg.ffn_embed_dim,
                 attention_heads=cfg.attention_heads, normalize_before=True, learned_pos=True)
    return TransformerConfig(
        encoder=EncDecBaseConfig(layers=cfg.encoder_layers, **sides),
        decoder=DecoderConfig(layers=cfg.decoder_layers, **sides),
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout, activation_fn=cfg.activation_fn,
        max_source_positions=cfg.max_source_positions,
        max_target_positions=cfg.max_target_positions,
        share_decoder_input_output_embed=True, layernorm_embedding=True,
        no_scale_embedding=True,
    )


@register_model("ofasys", dataclass=OFASysConfig)
class OFASysModel(FairseqEncoderDecoderModel):
    @classmethod
    def build_model(cls, cfg: OFASysConfig, task) -> "OFASysModel":
        dictionary = task.target_dictionary
        embed_tokens = nn.Embedding(len(dictionary), cfg.embed_dim, dictionary.pad())
        nn.init.normal_(embed_tokens.weight, mean=0, std=cfg.embed_dim ** -0.5)
        nn.init.zeros_(embed_tokens.weight[dictionary.pad()])
        layers = transformer_config(cfg)
        adapters = {TOKENS_ADAPTER: TokenAdapter(embed_tokens, cfg.max_source_positions)}
        task.plan_modalities()  # which adapters: those the checkpoint or the plans name
        modality_of = {}  # feature adapter key -> its modality
        heads = {}  # continuous outputs the model decodes: modality -> its head
        for modality in registered_modalities():  # (a checkpoint may keep others' settings)
            settings = task.modality_settings.get(modality.name)
            if settings is None:
                continue
            if modality.input_kind == FEATURES:
                for key, adapter in modality.build_adapters(settings, cfg, cfg.embed_dim).items():
                    adapters[key], modality_of[key] = adapter, modality.name
            if modality.output_kind == CONTINUOUS and settings.get("decoded"):
                heads[modality.name] = modality.build_output_head(settings, cfg.embed_dim)
        encoder = UniversalEncoder(layers, dictionary, nn.ModuleDict(adapters), modality_of)
        decoder = UniversalDecoder(layers, dictionary, embed_tokens, nn.ModuleDict(heads))
        return use_uniform_dropout(cls(encoder, decoder))

    def modules_of(self, plan, settings: Mapping[str, Mapping[str, Any]]) -> List[nn.Module]:
        """The adapters and output head that the plan's slots read and decode through."""
        modules = []
        for slot in {s for t in plan.templates for s in t.feature_slots}:
            key = get_modality(slot.modality).adapter_key(slot, settings[slot.modality])
            modules.append(self.encoder.adapters[key])
        if plan.target.modality in self.decoder.output_heads:
            modules.append(self.decoder.output_heads[plan.target.modality])
        return modules

    # set by the task when it fine-tunes a checkpoint (--finetune-from-model)
    extends_checkpoint = False

    def load_pretrained_parts(self, cfg) -> None:
        """Each modality's adapters from the weights a user brings (``load_pretrained``):
        a model built to train, not to read a checkpoint into."""
        encoder = self.encoder
        for modality in registered_modalities():
            adapters = {key: encoder.adapters[key] for key, name in encoder.modality_of.items()
                        if name == modality.name}
            if adapters:
                modality.load_pretrained(adapters, cfg)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        if self.extends_checkpoint:
            state_dict = self._fitted_checkpoint(state_dict)
        return super().load_state_dict(state_dict, strict, model_cfg, args)

    def _fitted_checkpoint(self, state_dict):
        """A checkpoint this run fine-tunes, fitted to this model: the vocabulary rows it
        lacks (symbols the task appended) and the modules it lacks (a modality it never
        read: an adapter or an output head) keep this model's fresh initialization; its
        modules this task does not use are left out. Every other weight is the
        checkpoint's, unchanged."""
        own = self.state_dict()
        fresh_types = self.encoder.type_rows_by_name(state_dict, "encoder.")
        fitted, fresh = {}, []
        for name, value in own.items():
            saved = state_dict.get(name)
            if saved is None:
                fitted[name] = value
                fresh.append(name)
            elif not isinstance(value, torch.Tensor):  # a module's extra state
                fitted[name] = saved
            elif (saved.shape != value.shape and saved.dim() > 0
                  and saved.shape[1:] == value.shape[1:] and len(saved) < len(value)):
                fitted[name] = torch.cat([saved.to(value.dtype), value[len(saved):]])
            else:
                fitted[name] = saved  # a shape of another architecture fails the load
        unused = [n for n in state_dict if n not in own]
        logger.info(f"fine-tuning: {len(fresh)} tensors start fresh"
                    + (f" (in {_modules(fresh)})" if fresh else "")
                    + (f"; fresh type rows: {', '.join(fresh_types)}" if fresh_types else "")
                    + (f"; left out, unused by this task: {_modules(unused)}" if unused else ""))
        return fitted

    def forward(self, src_tokens, src_lengths, prev_output_tokens, features_only: bool = False,
                features=None, decoder_frames=None):
        # feature inputs (images, ...) are for the encoder; frames of a continuous target
        # for the decoder
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, features=features)
        x, extra = self.decoder(prev_output_tokens, encoder_out=encoder_out,
                                features_only=features_only, decoder_frames=decoder_frames)
        extra["encoder_out"] = encoder_out  # for losses on the encoder (CTC)
        return x, extra

    def set_beam_size(self, beam: int) -> None:
        """fairseq's search tells the model its beam (``EnsembleModel
        .set_decoder_beam_size``): the decoder's encoder attention then keeps one set of
        keys per source row (``cached_attention.py``)."""
        self.decoder.set_beam_size(beam)


def _modules(names) -> str:
    """Parameter names by their module, three levels deep (``encoder.adapters.x``)."""
    return ", ".join(sorted({".".join(n.split(".")[:3]) for n in names}))


def _register_size(name: str, width: int, encoder_layers: int, decoder_layers: int, heads: int):
    def set_defaults(args):
        # only fill what the user did not pass (fairseq suppresses argparse defaults); the
        # modalities' defaults may be task options (--image-size), in the same namespace
        defaults = dict(embed_dim=width, ffn_embed_dim=4 * width, attention_heads=heads,
                        encoder_layers=encoder_layers, decoder_layers=decoder_layers)
        for modality in registered_modalities():
            defaults.update(modality.architecture_defaults.get(name, {}))
        for key, value in defaults.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)

    register_model_architecture("ofasys", name)(set_defaults)


for _name, _sizes in ARCHITECTURES.items():
    _register_size(_name, *_sizes)
