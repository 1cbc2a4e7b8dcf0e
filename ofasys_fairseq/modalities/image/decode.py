"""Decoding an IMAGE cell: a file path (relative to the data file's directory, or
absolute), base64 bytes, or a ``data:image/...;base64,`` URI, decoded with Pillow (EXIF
orientation applied, RGB); from Python also a Pillow image or a numpy array."""
import contextlib
import io
import os
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..encoded import base64_bytes, data_uri_bytes, resolve_path

# Pillow refuses "decompression bombs" above this many pixels; a corrupt header
# claiming huge dimensions must fail as bad data, not exhaust memory.
Image.MAX_IMAGE_PIXELS = 1 << 28
EXIF_ORIENTATION = 0x0112


class DecodedImage(NamedTuple):
    image: Image.Image  # RGB, upright, possibly decoded at reduced scale (JPEG draft)
    original_size: Tuple[int, int]  # (width, height) of the upright full-size image


def image_from_python(value) -> DecodedImage:
    """A Pillow image (any mode) or a numpy array: ``H x W`` (gray) or ``H x W x 3/4``,
    ``uint8``, or floats in [0, 1]. ValueError saying what is wrong otherwise."""
    if isinstance(value, np.ndarray):
        if value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[2] not in (1, 3, 4)):
            raise ValueError(f"expected an image array of shape H x W or H x W x 3 (or 1, 4), "
                             f"found shape {value.shape}")
        if value.dtype.kind == "f":
            if value.size and (value.min() < 0 or value.max() > 1):
                raise ValueError("a float image array must hold values in [0, 1]")
            value = np.round(value * 255)
        elif value.dtype != np.uint8:
            raise ValueError(f"expected a uint8 or float image array, found {value.dtype}")
        value = Image.fromarray(value.astype(np.uint8).squeeze(-1) if value.ndim == 3
                                and value.shape[2] == 1 else value.astype(np.uint8))
    return DecodedImage(value if value.mode == "RGB" else value.convert("RGB"), value.size)


def read_image_bytes(value: Union[str, bytes], base_dir: str) -> Tuple[bytes, str]:
    """The encoded bytes of a cell (or the cell itself: an image file's bytes, as from a
    tar shard) and a short description of where they came from. Raises ValueError saying
    what the cell was taken to be."""
    if isinstance(value, bytes):
        return value, "encoded bytes"
    data = data_uri_bytes(value, "data:image/png;base64,<payload>")
    if data is not None:
        return data, "data: URI"
    path = resolve_path(value, base_dir)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read(), path
    data = base64_bytes(value)
    if data is not None:
        return data, "base64"
    raise ValueError(f"no such image file: {path} (the cell is neither an existing file, "
                     f"base64, nor a data: URI)")


def decode_image(value: Union[str, bytes], base_dir: str,
                 draft_size: Optional[int] = None) -> DecodedImage:
    """Decode a cell into an upright RGB image.

    Args:
        value: the cell (path, base64 or data: URI, or the file's bytes).
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
