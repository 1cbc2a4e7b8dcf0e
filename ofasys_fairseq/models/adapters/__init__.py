"""Modality adapters: data tensors -> embedding sequences for the shared encoder."""
from .base import AdapterOutput, Modality
from .image import IMAGE_ADAPTORS, ImageAdapter, ImageGeometry, adapter_key, build_image_adapters
from .text import TextAdapter

__all__ = ["AdapterOutput", "IMAGE_ADAPTORS", "ImageAdapter", "ImageGeometry", "Modality",
           "TextAdapter", "adapter_key", "build_image_adapters"]
