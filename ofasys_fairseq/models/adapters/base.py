"""What every modality adapter returns, and the modality enum."""
from enum import Enum
from typing import NamedTuple

from torch import Tensor


class Modality(str, Enum):
    """Encoder input modalities; each has its own type embedding."""

    TEXT = "text"
    IMAGE = "image"


class AdapterOutput(NamedTuple):
    embeddings: Tensor  # B x L x D, positions already added
    padding_mask: Tensor  # B x L, True at padding
