"""AUDIO: reading sounds (``decode.py``), filterbank features, their statistics and
SpecAugment (``features.py``), the convolutional adapter (``adapter.py``) and the
modality (``modality.py``)."""
from .modality import AUDIO, AudioModality, AudioOptions

__all__ = ["AUDIO", "AudioModality", "AudioOptions"]
