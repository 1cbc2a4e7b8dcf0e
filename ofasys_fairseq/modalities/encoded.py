"""How IMAGE and AUDIO cells hold media: a path relative to the data file's directory
(or absolute), base64 bytes or a ``data:`` URI."""
import base64
import binascii
import os
from typing import Optional

# A cell shorter than this is read as a path, not as base64, even if it uses only base64
# letters: no image or sound encodes in fewer bytes.
MIN_BASE64_LENGTH = 64


def resolve_path(value: str, base_dir: str) -> str:
    """A cell's path: absolute as given, else relative to ``base_dir``."""
    return value if os.path.isabs(value) else os.path.join(base_dir, value)


def data_uri_bytes(value: str, example: str) -> Optional[bytes]:
    """The payload of a ``data:...;base64,`` URI; None when ``value`` is not one.

    Args:
        example: a well-formed URI of the caller's kind (named in the error).
    """
    if not value.startswith("data:"):
        return None
    header, comma, payload = value.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ValueError(f"a data: URI must look like '{example}'")
    return b64decode(payload, "the data: URI's payload")


def base64_bytes(value: str) -> Optional[bytes]:
    """The bytes of a base64 cell; None when ``value`` cannot be one."""
    if len(value) < MIN_BASE64_LENGTH or not all(c.isalnum() or c in "+/=\n\r" for c in value):
        return None
    return b64decode(value, "the base64 cell")


def b64decode(payload: str, what: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{what} is not valid base64: {error}") from None
