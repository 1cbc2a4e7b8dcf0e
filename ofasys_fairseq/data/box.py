"""BOX slots: parse, check and quantize boxes into ``<bin_k>`` location tokens.

A cell holds ``x0,y0,x1,y1`` (or a JSON list of the four) in pixels of the
original image. Boxes move with their image through the preprocessing, then
each coordinate becomes one of ``num_bins`` bins over the output image side,
as OFA does: ``k = round(x / side * (num_bins - 1))``.
"""
import json
import math
from typing import List, Sequence, Tuple

BOX_LENGTH = 4  # location tokens per box


def parse_box(value: object) -> List[float]:
    """Four finite numbers with x0 < x1 and y0 < y1; ValueError saying what is wrong."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else text.split(",")
        except json.JSONDecodeError:
            raise ValueError(f"expected 'x0,y0,x1,y1' or a JSON list, got {text!r}") from None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"expected 'x0,y0,x1,y1' or a list of four numbers, "
                         f"found {type(value).__name__}")
    if len(value) != BOX_LENGTH:
        raise ValueError(f"expected 4 coordinates x0,y0,x1,y1, got {len(value)}: {value!r}")
    box = []
    for name, coordinate in zip(("x0", "y0", "x1", "y1"), value):
        try:
            number = float(coordinate.strip() if isinstance(coordinate, str) else coordinate)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(coordinate, bool) or not math.isfinite(number):
            raise ValueError(f"{name} is not a finite number: {coordinate!r}")
        box.append(number)
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"expected x0 < x1 and y0 < y1, got {format_box(box)}")
    return box


def check_box_inside(box: Sequence[float], size: Tuple[int, int]) -> None:
    """ValueError unless the box lies within an image of ``(width, height)``."""
    width, height = size
    if min(box) < 0 or box[2] > width or box[3] > height:
        raise ValueError(f"box {format_box(box)} is outside the {width}x{height} image")


def quantize(box: Sequence[float], side: int, num_bins: int) -> List[int]:
    """Bins of a box in pixels of a ``side x side`` image."""
    return [min(max(int(round(c / side * (num_bins - 1))), 0), num_bins - 1) for c in box]


def dequantize(bins: Sequence[int], num_bins: int) -> List[float]:
    """Bins -> coordinates as fractions of the image width / height."""
    return [k / (num_bins - 1) for k in bins]


def format_box(box: Sequence[float]) -> str:
    return ",".join(f"{c:g}" for c in box)
