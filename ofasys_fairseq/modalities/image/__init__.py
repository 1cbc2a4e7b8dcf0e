"""IMAGE: decoding (``decode.py``), preprocessing and augmentation with boxes
(``preprocess.py``), the ResNet / ViT adapters (``adapter.py``) and the modality
(``modality.py``)."""
from .modality import IMAGE, ImageModality, ImageModelOptions, ImageOptions, recipe_of
from .preprocess import IMAGE_RECIPES

__all__ = ["IMAGE", "IMAGE_RECIPES", "ImageModality", "ImageModelOptions", "ImageOptions",
           "recipe_of"]
