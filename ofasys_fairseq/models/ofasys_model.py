"""The OFASys model: modality adapters around one BART-style encoder-decoder."""
from dataclasses import dataclass, field

import torch.nn as nn
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (FairseqEncoderDecoderModel, register_model,
                            register_model_architecture)
from fairseq.models.transformer import TransformerConfig, TransformerDecoderBase
from fairseq.models.transformer.transformer_config import DecoderConfig, EncDecBaseConfig
from omegaconf import II

from .adapters import Modality, TextAdapter, build_image_adapters
from .universal_encoder import UniversalEncoder


@dataclass
class OFASysConfig(FairseqDataclass):
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
    resnet_depth: int = field(default=50, metadata={
        "help": "depth of the torchvision ResNet whose stages 1-3 embed images "
                "(18, 34, 50, 101 or 152)"})
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")


# name -> (width, encoder layers, decoder layers, heads, ResNet depth, image size):
# the OFASys model sizes, with OFA's image backbones and resolutions
ARCHITECTURES = {
    "ofasys_tiny": (256, 4, 4, 4, 50, 256),
    "ofasys_medium": (512, 4, 4, 8, 101, 256),
    "ofasys_base": (768, 6, 6, 12, 101, 480),
    "ofasys_large": (1024, 12, 12, 16, 152, 480),
    "ofasys_huge": (1280, 24, 12, 16, 152, 480),
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
        adapters = nn.ModuleDict({
            Modality.TEXT.value: TextAdapter(embed_tokens, cfg.max_source_positions),
            **build_image_adapters(task.image_adaptors(), task.image_geometry, cfg.embed_dim,
                                   cfg.resnet_depth),
        })
        encoder = UniversalEncoder(layers, dictionary, adapters)
        decoder = TransformerDecoderBase(layers, dictionary, embed_tokens)
        return cls(encoder, decoder)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, features_only: bool = False,
                **modality_inputs):
        # modality inputs (images, ...) are for the encoder only
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **modality_inputs)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out,
                            features_only=features_only)


def _register_size(name: str, width: int, encoder_layers: int, decoder_layers: int, heads: int,
                   resnet_depth: int, image_size: int):
    def set_defaults(args):
        # only fill what the user did not pass (fairseq suppresses argparse defaults);
        # image_size is a task option (--image-size), present in the same namespace
        for key, value in dict(embed_dim=width, ffn_embed_dim=4 * width, attention_heads=heads,
                               encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                               resnet_depth=resnet_depth, image_size=image_size).items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)

    register_model_architecture("ofasys", name)(set_defaults)


for _name, _sizes in ARCHITECTURES.items():
    _register_size(_name, *_sizes)
