"""IMAGE: an input image, decoded and augmented in the data workers and embedded as a
patch sequence by a ResNet or ViT adapter (``adaptor=``).

Geometry belongs to the slot: ``size=`` resizes this slot's images (default
``--image-size``), so one run reads 16 px digits beside 256 px photos; the adapter
interpolates its position tables to each slot's grid.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from PIL import Image

from ...instruction import AttrSpec, Slot
from ..base import ENCODER, FEATURES, Context, Modality, unique
from .adapter import (DEFAULT_GEOMETRY, IMAGE_ADAPTORS, ImageGeometry, adapter_key,
                      build_image_adapter, load_resnet_weights)
from .decode import DecodedImage, decode_image, image_from_python
from .preprocess import DEFAULT_IMAGE_RECIPE, IMAGE_RECIPES, ImagePreprocessor

IMAGE = "IMAGE"


@dataclass
class ImageOptions(FairseqDataclass):
    """Task options: the defaults of IMAGE slots (saved in the checkpoint)."""
    image_size: Optional[int] = field(default=None, metadata={
        "help": "side of the square images IMAGE slots are resized to (default: 256 for "
                "ofasys_tiny/medium, 480 for base and larger, as OFA)"})
    image_adaptor: ChoiceEnum(IMAGE_ADAPTORS) = field(default="resnet", metadata={
        "help": "how IMAGE slots without adaptor= are embedded: ResNet stages 1-3 (stride 16) "
                "or ViT patches"})
    vit_patch_size: int = field(default=DEFAULT_GEOMETRY.vit_patch_size, metadata={
        "help": "side of a vit image patch"})


@dataclass
class ImageModelOptions(FairseqDataclass):
    resnet_depth: int = field(default=50, metadata={
        "help": "depth of the torchvision ResNet whose stages 1-3 embed images "
                "(18, 34, 50, 101 or 152)"})
    resnet_weights: Optional[str] = field(default=None, metadata={
        "help": "start those stages from torchvision ResNet weights in this file (a state "
                "dict of the whole resnet<depth>, e.g. resnet50-11ad3fa6.pth as torchvision "
                "downloads it), read with torch.load(weights_only=True); training runs only"})


def recipe_of(slot: Slot) -> str:
    return slot.get("preprocess") or DEFAULT_IMAGE_RECIPE


def geometry_of(settings) -> ImageGeometry:
    return ImageGeometry(settings["image_size"], settings["vit_patch_size"])


class ImageModality(Modality):
    name = IMAGE
    attributes = {
        "mask_ratio": AttrSpec("float", "fraction of patches masked out", min=0, max=1,
                               sides=(ENCODER,)),
        "size": AttrSpec("int", "side in pixels this slot's images are resized to (default "
                                "--image-size)", min=1, sides=(ENCODER,)),
    }
    sides = (ENCODER,)  # no image generation yet
    choices = {"preprocess": tuple(IMAGE_RECIPES), "adaptor": IMAGE_ADAPTORS}
    input_kind = FEATURES
    output_kind = None
    # OFA's backbones and resolutions per model size
    architecture_defaults = {
        "ofasys_tiny": {"resnet_depth": 50, "image_size": 256},
        "ofasys_medium": {"resnet_depth": 101, "image_size": 256},
        "ofasys_base": {"resnet_depth": 101, "image_size": 480},
        "ofasys_large": {"resnet_depth": 152, "image_size": 480},
        "ofasys_huge": {"resnet_depth": 152, "image_size": 480},
    }

    def __init__(self):
        self._preprocessors: Dict[Tuple[Slot, int, bool], ImagePreprocessor] = {}

    # -- settings ----------------------------------------------------------------------------
    def settings(self, cfg) -> Dict[str, Any]:
        return {"image_size": cfg.image_size or DEFAULT_GEOMETRY.image_size,
                "vit_patch_size": cfg.vit_patch_size, "image_adaptor": str(cfg.image_adaptor)}

    def plan_settings(self, settings, slots: Sequence[Slot]) -> Dict[str, Any]:
        """The adaptors the slots use (the model builds one adapter each), checked against
        the image geometry: the run's, and each slot's own size."""
        adaptors = unique(self._adaptor(s, settings) for s in slots)
        geometry = geometry_of(settings)
        geometry.check(adaptors)
        for slot in slots:
            size, stride = slot.get("size"), geometry.stride(self._adaptor(slot, settings))
            if size and size % stride:
                raise ValueError(f"{slot}: size={size} must be a multiple of the "
                                 f"{self._adaptor(slot, settings)} patch size {stride}")
        return {**settings, "adaptors": adaptors}

    def settings_from_old_checkpoint(self, task_state) -> Dict[str, Any]:
        return dict(task_state["image_settings"])

    @staticmethod
    def _adaptor(slot: Slot, settings) -> str:
        return slot.get("adaptor") or settings["image_adaptor"]

    @staticmethod
    def _size(slot: Slot, settings) -> int:
        return slot.get("size") or settings["image_size"]

    # -- cells ---------------------------------------------------------------------------------
    def read(self, cell, slot: Slot, ctx: Context, decode: bool = True):
        """A decoded image; without ``decode``, the checked cell."""
        if isinstance(cell, (Image.Image, np.ndarray)):  # given from Python
            return image_from_python(cell) if decode else cell
        if isinstance(cell, str):
            cell = cell.strip()
        if not isinstance(cell, (str, bytes)) or not cell:  # bytes: a tar shard's image file
            raise ValueError(f"expected an image path, base64 or data: URI for {slot}, found "
                             f"{cell!r}"[:200])
        if not decode:
            return cell
        # random crops enlarge parts of the image: decode those at full resolution
        crops = ctx.train and recipe_of(slot) != "plain"
        return decode_image(cell, ctx.base_dir,
                            None if crops else self._size(slot, ctx.settings))

    # -- features ------------------------------------------------------------------------------
    def num_positions(self, value, slot: Slot, ctx: Context) -> int:
        return geometry_of(ctx.settings).num_patches(self._adaptor(slot, ctx.settings),
                                                     self._size(slot, ctx.settings))

    def adapter_key(self, slot: Slot, settings) -> str:
        return adapter_key(self._adaptor(slot, settings))

    def features(self, image: DecodedImage, slot: Slot, ctx: Context, attached: Sequence[Any],
                 seed: Optional[int]) -> Tuple[torch.Tensor, List[List[float]]]:
        """``uint8`` pixels of ``size x size``; ``attached`` boxes (``x0,y0,x1,y1`` in pixels
        of the original image) come back as fractions of the output width and height."""
        size = self._size(slot, ctx.settings)
        preprocess = self._preprocessor(slot, size, ctx.train)
        if preprocess.is_random and seed is not None:
            # torchvision draws from torch's global CPU generator: seed it for this item only
            # (reseeding the CUDA generators too would disturb dropout on GPUs)
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                pixels, boxes = preprocess(image, attached)
        else:
            pixels, boxes = preprocess(image, attached)
        return pixels, [[c / size for c in box] for box in boxes]

    def collate(self, images: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"pixels": torch.stack(list(images))}

    def build_adapters(self, settings, model_cfg, embed_dim: int):
        return {adapter_key(a): build_image_adapter(a, geometry_of(settings), embed_dim,
                                                    model_cfg.resnet_depth)
                for a in settings["adaptors"]}

    def load_pretrained(self, adapters, model_cfg) -> None:
        path = getattr(model_cfg, "resnet_weights", None)
        resnet = adapters.get(adapter_key("resnet"))
        if path and resnet is not None:
            load_resnet_weights(resnet.backbone, model_cfg.resnet_depth, path)

    def _preprocessor(self, slot: Slot, size: int, train: bool) -> ImagePreprocessor:
        key = (slot, size, train)
        if key not in self._preprocessors:
            self._preprocessors[key] = ImagePreprocessor(recipe_of(slot), size, train,
                                                         slot.get("mask_ratio") or 0.0)
        return self._preprocessors[key]
