"""Modalities as plug-ins: one module per slot type, and the registry the core goes
through (see ``base.py`` for what a modality defines).

The built-in TEXT, IMAGE, BOX, STRUCT, AUDIO and PHONE register here, then the types only declared so far.
"""
from dataclasses import dataclass

from .audio import AudioModality, AudioOptions
from .base import Context, Corpus, Modality, Target, TokenConstraint
from .box import BoxModality, BoxOptions
from .declared import DECLARED
from .image import ImageModality, ImageModelOptions, ImageOptions
from .phone import PhoneModality
from .registry import get_modality, register_modality, registered_modalities
from .struct import StructModality
from .text import TextModality

for _modality in (TextModality(), ImageModality(), BoxModality(), StructModality(),
                  AudioModality(), PhoneModality(), *DECLARED):
    register_modality(_modality)


@dataclass
class ModalityTaskOptions(ImageOptions, BoxOptions, AudioOptions):
    """The built-in modalities' task options (``--image-size``, ``--num-bins``,
    ``--audio-stats-utterances``, ...)."""


@dataclass
class ModalityModelOptions(ImageModelOptions):
    """The built-in modalities' model options (``--resnet-depth``)."""


__all__ = ["Context", "Corpus", "Modality", "ModalityModelOptions", "ModalityTaskOptions",
           "Target", "TokenConstraint", "get_modality", "register_modality",
           "registered_modalities"]
