"""IMAGE preprocessing: resize and augment a decoded image together with the boxes
drawn on it (torchvision ``transforms.v2``), into ``uint8`` pixels.

Images leave the DataLoader workers as ``uint8`` tensors of ``size x size``: a quarter
of the bytes of float pixels to copy between processes; the adapter normalizes on the
model's device.
"""
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from .decode import DecodedImage

# -- recipes: training augmentation chosen by ``preprocess=`` ------------------------
def _plain(size: int, train: bool) -> v2.Transform:
    return _resize(size)


def _imagenet(size: int, train: bool) -> v2.Transform:
    """The classification recipe (as torchvision's references): random resized crop,
    horizontal flip and RandAugment. RandAugment cannot move boxes."""
    if not train:
        return _resize(size)
    return v2.Compose([
        v2.RandomResizedCrop(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandAugment(num_ops=2, magnitude=9),
    ])


def _grounding(size: int, train: bool) -> v2.Transform:
    """Random crop that keeps every box whole, horizontal flip, resize. The flip
    mirrors the scene: do not use it when the text says 'left' or 'right'."""
    if not train:
        return _resize(size)
    return v2.Compose([CropKeepingBoxes(min_scale=0.6), v2.RandomHorizontalFlip(),
                       _resize(size)])


def _resize(size: int) -> v2.Transform:
    return v2.Resize((size, size), interpolation=InterpolationMode.BICUBIC, antialias=True)


# name -> (builder(size, train), whether it can move boxes)
IMAGE_RECIPES: Dict[str, Tuple[Callable[[int, bool], v2.Transform], bool]] = {
    "plain": (_plain, True),
    "imagenet": (_imagenet, False),
    "grounding": (_grounding, True),
}
DEFAULT_IMAGE_RECIPE = "plain"


class CropKeepingBoxes(v2.Transform):
    """A random crop of at least ``min_scale`` of each side that contains every box."""

    def __init__(self, min_scale: float):
        super().__init__()
        self.min_scale = min_scale

    def make_params(self, flat_inputs: List[object]) -> Dict[str, int]:
        height, width = v2.query_size(flat_inputs)
        boxes = [b for b in flat_inputs if isinstance(b, tv_tensors.BoundingBoxes)]
        inner = torch.cat([b.as_subclass(torch.Tensor).reshape(-1, 4) for b in boxes]) \
            if boxes else torch.empty(0, 4)
        left_max, top_max = (inner[:, 0].min().item(), inner[:, 1].min().item()) \
            if len(inner) else (width, height)
        right_min, bottom_min = (inner[:, 2].max().item(), inner[:, 3].max().item()) \
            if len(inner) else (0, 0)
        x0, x1 = _random_span(width, self.min_scale, left_max, right_min)
        y0, y1 = _random_span(height, self.min_scale, top_max, bottom_min)
        return dict(top=y0, left=x0, height=y1 - y0, width=x1 - x0)

    def transform(self, inpt, params):
        return self._call_kernel(v2.functional.crop, inpt, **params)


def _random_span(length: int, min_scale: float, start_max: float, end_min: float):
    """[start, end) within [0, length): start <= start_max, end >= end_min, and
    end - start >= min_scale * length where the boxes allow it."""
    start = int(torch.randint(0, int(max(0, min(start_max, (1 - min_scale) * length))) + 1,
                              ()).item())
    lowest_end = int(np.ceil(max(end_min, start + min_scale * length)))
    end = int(torch.randint(min(lowest_end, length), length + 1, ()).item())
    return start, max(end, start + 1)


class ImagePreprocessor:
    """Decoded image (+ its boxes) -> ``uint8`` tensor of ``size x size`` (+ moved boxes).

    Args:
        recipe: a key of ``IMAGE_RECIPES``.
        size: output side in pixels.
        train: apply the recipe's random augmentation.
        mask_ratio: fraction of the image area, a centred square, filled with the
            mean colour (the input of infilling-style tasks).
    """

    def __init__(self, recipe: str, size: int, train: bool, mask_ratio: float = 0.0):
        build, self.moves_boxes = IMAGE_RECIPES[recipe]
        self.transform = build(size, train)
        self.is_random = train and recipe != "plain"
        self.size, self.mask_ratio = size, mask_ratio

    def __call__(self, decoded: DecodedImage, boxes: Sequence[Sequence[float]] = ()
                 ) -> Tuple[torch.Tensor, List[List[float]]]:
        """Boxes are ``x0,y0,x1,y1`` in pixels of the original image; they come back in
        pixels of the ``size x size`` output."""
        image = decoded.image
        scale_x = image.width / decoded.original_size[0]
        scale_y = image.height / decoded.original_size[1]
        if boxes:
            inner = torch.tensor(boxes, dtype=torch.float32) * torch.tensor(
                [scale_x, scale_y, scale_x, scale_y])
            image, moved = self.transform(image, tv_tensors.BoundingBoxes(
                inner, format="XYXY", canvas_size=(image.height, image.width)))
            out_boxes = moved.as_subclass(torch.Tensor).tolist()
        else:
            image, out_boxes = self.transform(image), []
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        if self.mask_ratio > 0:
            _mask_centre(pixels, self.mask_ratio)
        return pixels, out_boxes


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _mask_centre(pixels: torch.Tensor, ratio: float) -> None:
    side = int(round(pixels.size(1) * ratio ** 0.5)), int(round(pixels.size(2) * ratio ** 0.5))
    top, left = (pixels.size(1) - side[0]) // 2, (pixels.size(2) - side[1]) // 2
    mean = torch.tensor([round(255 * m) for m in IMAGENET_MEAN], dtype=torch.uint8)
    pixels[:, top:top + side[0], left:left + side[1]] = mean.view(3, 1, 1)
