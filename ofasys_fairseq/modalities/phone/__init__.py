"""PHONE: phone sequences as their own tokens (``modality.py``) and text to phones with
eSpeak NG (``convert.py``, the ``ofasys-phonemize`` command)."""
from .modality import PHONE, PhoneModality

__all__ = ["PHONE", "PhoneModality"]
