"""The IMAGE and BOX slots of one row: decoded, augmented together, quantized.

Every BOX slot of a template holds pixels of the template's first IMAGE slot,
so that image and those boxes go through one transform.
"""
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from ..instruction import Slot
from ..models.adapters.image import ImageGeometry, adapter_key
from ..plan import TemplatePlan
from .box import BOX_LENGTH, check_box_inside, parse_box, quantize
from .image import DEFAULT_IMAGE_RECIPE, ImagePreprocessor, decode_image
from .table import DataError, required_cell


class VisualInputs(NamedTuple):
    images: Dict[str, List[torch.Tensor]]  # adapter key -> 3 x S x S uint8, one per slot
    box_bins: Dict[Slot, List[int]]  # BOX slot -> its four bins
    boxes: Dict[Slot, List[float]]  # BOX slot -> its box in pixels of the original image
    original_size: Optional[Tuple[int, int]]  # (width, height) of the first image


NO_VISUAL_INPUTS = VisualInputs({}, {}, {}, None)


class VisualReader:
    """Reads a row's IMAGE and BOX slots.

    Args:
        geometry: image size and patch sizes.
        default_adaptor: the image adaptor of slots without ``adaptor=``.
        num_bins: number of location tokens.
        base_dir: directory that relative image paths are resolved against.
        path: the data file (for error messages).
        train: apply the slots' augmentation recipes.
        with_target: rows hold the target (a BOX target is read and moved too).
    """

    def __init__(self, geometry: ImageGeometry, default_adaptor: str, num_bins: int,
                 base_dir: str, path: str, train: bool, with_target: bool = True):
        self.geometry, self.default_adaptor, self.num_bins = geometry, default_adaptor, num_bins
        self.base_dir, self.path, self.train = base_dir, path, train
        self.with_target = with_target
        self._preprocessors: Dict[Slot, ImagePreprocessor] = {}

    def adaptor(self, slot: Slot) -> str:
        return slot.get("adaptor") or self.default_adaptor

    def num_patches(self, template: TemplatePlan) -> int:
        return sum(self.patches_by_adapter(template).values())

    def patches_by_adapter(self, template: TemplatePlan) -> Dict[str, int]:
        """Encoder positions of the template's images, per adapter key."""
        patches: Dict[str, int] = {}
        for slot in template.image_slots:
            key = adapter_key(self.adaptor(slot))
            patches[key] = patches.get(key, 0) + self.geometry.num_patches(self.adaptor(slot))
        return patches

    def read(self, row: Dict[str, object], template: TemplatePlan, line: Optional[int],
             seed: Optional[int] = None) -> VisualInputs:
        """Decode and preprocess; ``seed`` drives the training augmentation."""
        if not template.image_slots:
            return NO_VISUAL_INPUTS
        box_slots = self._box_slots(template)
        boxes = {s: self._box(row, s, line) for s in box_slots}
        decoded = [self._decode(row, s, line) for s in template.image_slots]
        original_size = decoded[0].original_size
        self._check_inside(boxes, original_size, line)
        images: Dict[str, List[torch.Tensor]] = {}
        box_bins = {}
        for i, (slot, image) in enumerate(zip(template.image_slots, decoded)):
            attached = box_slots if i == 0 else []  # boxes are pixels of the first image
            pixels, moved = self._preprocess(slot, image, [boxes[s] for s in attached],
                                             None if seed is None else seed + i)
            images.setdefault(adapter_key(self.adaptor(slot)), []).append(pixels)
            for box_slot, box in zip(attached, moved):
                box_bins[box_slot] = quantize(box, self.geometry.image_size, self.num_bins)
        return VisualInputs(images, box_bins, boxes, original_size)

    def decoded_size(self, row: Dict[str, object], template: TemplatePlan,
                     line: Optional[int]) -> Optional[Tuple[int, int]]:
        """Decode every image of the row in full (a validation pass); the first one's
        original (width, height), None without images."""
        sizes = [self._decode(row, s, line).original_size for s in template.image_slots]
        return sizes[0] if sizes else None

    def check(self, row: Dict[str, object], template: TemplatePlan, line: Optional[int],
              image_size: Optional[Tuple[int, int]] = None) -> VisualInputs:
        """Parse the row's BOX cells without touching images, and check them against
        ``image_size`` when it is known. The bins are placeholders (they count tokens)."""
        box_slots = self._box_slots(template)
        boxes = {s: self._box(row, s, line) for s in box_slots}
        if image_size is not None:
            self._check_inside(boxes, image_size, line)
        return VisualInputs({}, {s: [0] * BOX_LENGTH for s in box_slots}, boxes, image_size)

    # -- helpers ---------------------------------------------------------------
    def _box_slots(self, template: TemplatePlan) -> List[Slot]:
        return [s for s in template.slots if s.modality == "BOX"
                and (self.with_target or s is not template.target)]

    def _decode(self, row, slot: Slot, line):
        # random crops enlarge parts of the image: decode those at full resolution
        crops = self.train and (slot.get("preprocess") or DEFAULT_IMAGE_RECIPE) != "plain"
        draft_size = None if crops else self.geometry.image_size
        return self._located(lambda: decode_image(self._cell(row, slot, line), self.base_dir,
                                                  draft_size), slot, line)

    def _box(self, row, slot: Slot, line) -> List[float]:
        value = required_cell(row, slot, self.path, line)
        return self._located(lambda: parse_box(value), slot, line)

    def _check_inside(self, boxes: Dict[Slot, List[float]], size, line) -> None:
        for slot, box in boxes.items():
            self._located(lambda: check_box_inside(box, size), slot, line)

    def _preprocess(self, slot: Slot, image, boxes, seed: Optional[int]):
        preprocess = self._preprocessor(slot)
        if not (preprocess.is_random and seed is not None):
            return preprocess(image, boxes)
        # torchvision draws from torch's global CPU generator: seed it for this item only
        # (reseeding the CUDA generators too would disturb dropout on GPUs)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return preprocess(image, boxes)

    def _cell(self, row, slot: Slot, line) -> str:
        value = required_cell(row, slot, self.path, line)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"expected an image path, base64 or data: URI for {slot}, found "
                            f"{value!r}"[:200], self.path, line, slot.column)
        return value.strip()

    def _located(self, read, slot: Slot, line):
        try:
            return read()
        except ValueError as error:
            if isinstance(error, DataError):
                raise
            raise DataError(str(error), self.path, line, slot.column) from None

    def _preprocessor(self, slot: Slot) -> ImagePreprocessor:
        if slot not in self._preprocessors:
            self._preprocessors[slot] = ImagePreprocessor(
                slot.get("preprocess") or DEFAULT_IMAGE_RECIPE, self.geometry.image_size,
                self.train, slot.get("mask_ratio") or 0.0)
        return self._preprocessors[slot]


def augmentation_seed(*entropy: int) -> int:
    """A torch seed for the image transforms, a pure function of ``entropy``."""
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
