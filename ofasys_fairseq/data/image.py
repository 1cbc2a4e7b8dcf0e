"""IMAGE slot preprocessing: decode a cell, then resize and augment it together
with the boxes drawn on it.

A cell holds a file path (relative to the data file's directory, or absolute),
base64 bytes, or a ``data:image/...;base64,`` URI. Images are decoded with
Pillow (EXIF orientation applied, RGB) and leave the DataLoader workers as
``uint8`` tensors of ``size x size``: a quarter of the bytes of float pixels to
copy between processes; the image adapter normalizes on the model's device.
"""
import base64
import binascii
import contextlib
import io
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

# Pillow refuses "decompression bombs" above this many pixels; a corrupt header
# claiming huge dimensions must fail as bad data, not exhaust memory.
Image.MAX_IMAGE_PIXELS = 1 << 28
# A base64 image is never shorter than this (the smallest PNG is ~70 bytes), so a
# short cell that happens to use only base64 letters is read as a path.
MIN_BASE64_LENGTH = 64
EXIF_ORIENTATION = 0x0112


class DecodedImage(NamedTuple):
    image: Image.Image  # RGB, upright, possibly decoded at reduced scale (JPEG draft)
    original_size: Tuple[int, int]  # (width, height) of the upright full-size image


def read_image_bytes(value: str, base_dir: str) -> Tuple[bytes, str]:
    """The encoded bytes of a cell and a short description of where they came from.
    Raises ValueError saying what the cell was taken to be."""
    if value.startswith("data:"):
        header, comma, payload = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ValueError("a data: URI must look like 'data:image/png;base64,<payload>'")
        return _b64decode(payload, "the data: URI's payload"), "data: URI"
    path = value if os.path.isabs(value) else os.path.join(base_dir, value)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read(), path
    if len(value) >= MIN_BASE64_LENGTH and _looks_like_base64(value):
        return _b64decode(value, "the base64 cell"), "base64"
    raise ValueError(f"no such image file: {path} (the cell is neither an existing file, "
                     f"base64, nor a data: URI)")


def decode_image(value: str, base_dir: str, draft_size: Optional[int] = None) -> DecodedImage:
    """Decode a cell into an upright RGB image.

    Args:
        value: the cell (path, base64 or data: URI).
        base_dir: directory that relative paths are resolved against.
        draft_size: let JPEG decoding skip detail finer than this final size
            (Pillow's ``draft``; both sides stay >= draft_size).
    """
    data, source = read_image_bytes(value, base_dir)
    with _decoding(source):
        image, original_size = _open(data)
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # decode now: truncated or corrupt data fails here, not later
        ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
    return DecodedImage(image if image.mode == "RGB" else image.convert("RGB"), original_size)


def _open(data: bytes) -> Tuple[Image.Image, Tuple[int, int]]:
    image = Image.open(io.BytesIO(data))
    rotated = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # quarter turns
    return image, image.size[::-1] if rotated else image.size


@contextlib.contextmanager
def _decoding(source: str):
    try:
        yield
    except UnidentifiedImageError:
        raise ValueError(f"cannot decode the image ({source}): not an image format Pillow "
                         f"reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode the image ({source}): {error}") from None


def _looks_like_base64(value: str) -> bool:
    return all(c.isalnum() or c in "+/=\n\r" for c in value)


def _b64decode(payload: str, what: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{what} is not valid base64: {error}") from None


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
