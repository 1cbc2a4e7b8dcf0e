"""Modality adapters: data tensors -> embedding sequences for the shared encoder."""
from .base import AdapterOutput, Modality
from .text import TextAdapter

__all__ = ["AdapterOutput", "Modality", "TextAdapter"]
