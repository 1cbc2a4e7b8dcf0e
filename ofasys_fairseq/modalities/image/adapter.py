"""Image adapters: uint8 pixels -> a patch sequence at the model width.

Two backbones, chosen per slot (``[IMAGE:img,adaptor=vit]``) or by
``--image-adaptor``:

* ``resnet``: a torchvision ResNet cut after stage 3 (stride 16), as OFA;
* ``vit``: a ViT-style patch embedding (one strided convolution).

Both feature maps are flattened row by row, projected to the model width and
given learned 2-D positions (a row plus a column embedding). The tables have the grid of
the run's ``--image-size``; a slot of another size (``[IMAGE:img,size=64]``) gets them
linearly interpolated to its grid, so one adapter reads images of every size.
"""
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch import Tensor

from ..base import AdapterOutput
from .preprocess import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

RESNET_STRIDE = 16  # after stage 3
RESNET_STAGE3_CHANNELS = {18: 256, 34: 256, 50: 1024, 101: 1024, 152: 1024}
IMAGE_ADAPTORS = ("resnet", "vit")


@dataclass(frozen=True)
class ImageGeometry:
    """How images are cut into patches (saved with the task: the default size fixes the
    grid of the position tables).

    Args:
        image_size: side of the preprocessed square image, in pixels (the default of slots
            without ``size=``).
        vit_patch_size: side of one ``vit`` patch, in pixels.
    """

    image_size: int
    vit_patch_size: int

    def stride(self, adaptor: str) -> int:
        return RESNET_STRIDE if adaptor == "resnet" else self.vit_patch_size

    def grid(self, adaptor: str, size: Optional[int] = None) -> int:
        """Patches per side of an image of ``size`` (default: ``image_size``)."""
        return (size or self.image_size) // self.stride(adaptor)

    def num_patches(self, adaptor: str, size: Optional[int] = None) -> int:
        return self.grid(adaptor, size) ** 2

    def check(self, adaptors: Sequence[str]) -> None:
        for adaptor in adaptors:
            # a zero or negative size would pass the modulo test (or divide by zero)
            if self.image_size <= 0:
                raise ValueError(f"--image-size must be positive, got {self.image_size}")
            if self.stride(adaptor) <= 0:
                raise ValueError(f"--vit-patch-size must be positive, got {self.stride(adaptor)}")
            if self.image_size % self.stride(adaptor):
                raise ValueError(f"--image-size {self.image_size} must be a multiple of the "
                                 f"{adaptor} patch size {self.stride(adaptor)}")


# --image-size when neither the option nor the --arch sets it; --vit-patch-size
DEFAULT_GEOMETRY = ImageGeometry(image_size=256, vit_patch_size=16)


def adapter_key(adaptor: str) -> str:
    """The encoder's ModuleDict key (and a feature group's ``adapter``) of an image adaptor."""
    return f"image_{adaptor}"


def resnet_stage3(depth: int) -> nn.Sequential:
    """torchvision's ResNet-``depth`` up to and including stage 3 (randomly initialised:
    nothing is downloaded)."""
    if depth not in RESNET_STAGE3_CHANNELS:
        raise ValueError(f"--resnet-depth must be one of {sorted(RESNET_STAGE3_CHANNELS)}")
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                         resnet.layer1, resnet.layer2, resnet.layer3)


def load_resnet_weights(stages: nn.Sequential, depth: int, path: str) -> None:
    """Fill ``resnet_stage3(depth)`` from a file of torchvision ResNet-``depth`` weights
    (its whole state dict), read without unpickling code (``weights_only``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resnet-weights {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    try:
        resnet.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ValueError(f"--resnet-weights {path}: not the weights of torchvision's "
                         f"resnet{depth} (--resnet-depth {depth}): {str(error)[:300]}") from None
    parts = (resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1,
             resnet.layer2, resnet.layer3)
    for stage, part in zip(stages, parts):
        stage.load_state_dict(part.state_dict())
    logger.info(f"image backbone: stages 1-3 of resnet{depth} from {path}")


class ImageAdapter(nn.Module):
    """Normalizes ``uint8`` images, runs a backbone and returns its feature map as a
    sequence of patches with 2-D positions.

    Args:
        backbone: image -> ``B x channels x grid x grid`` features.
        channels: the backbone's output channels.
        grid: patches per side (the position tables' size).
        embed_dim: model width.
    """

    def __init__(self, backbone: nn.Module, channels: int, grid: int, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        self.project = nn.Linear(channels, embed_dim) if channels != embed_dim else nn.Identity()
        # unit-scale content and positions of comparable size: neither drowns the other
        self.content_norm = nn.LayerNorm(embed_dim)
        self.row_positions = nn.Embedding(grid, embed_dim)
        self.column_positions = nn.Embedding(grid, embed_dim)
        for table in (self.row_positions, self.column_positions):
            nn.init.normal_(table.weight, std=0.5)
        self.grid = grid
        self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, pixels: Tensor) -> AdapterOutput:
        """Args:
            pixels: ``B x 3 x S x S`` uint8 images.
        """
        x = pixels.to(self.mean.dtype, copy=True).sub_(self.mean).div_(self.std)  # one copy
        features = self.backbone(x)
        batch, _, height, width = features.shape
        x = self.content_norm(self.project(features.flatten(2).transpose(1, 2)))  # B x L x D
        positions = (_resampled(self.row_positions.weight, height)[:, None]
                     + _resampled(self.column_positions.weight, width)[None, :])
        x = x + positions.reshape(1, -1, x.size(-1))
        return AdapterOutput(x, torch.zeros(batch, x.size(1), dtype=torch.bool, device=x.device))


def _resampled(table: Tensor, length: int) -> Tensor:
    """A learned position table (``grid x D``) at ``length`` positions: itself, or linearly
    interpolated with its first and last rows kept at the ends."""
    if length == table.size(0):
        return table
    return F.interpolate(table.t()[None], size=length, mode="linear",
                         align_corners=True)[0].t()


def build_image_adapter(adaptor: str, geometry: ImageGeometry, embed_dim: int,
                        resnet_depth: int) -> ImageAdapter:
    if adaptor == "resnet":
        return ImageAdapter(resnet_stage3(resnet_depth), RESNET_STAGE3_CHANNELS[resnet_depth],
                            geometry.grid(adaptor), embed_dim)
    if adaptor == "vit":
        patch = geometry.vit_patch_size
        return ImageAdapter(nn.Conv2d(3, embed_dim, kernel_size=patch, stride=patch), embed_dim,
                            geometry.grid(adaptor), embed_dim)
    raise ValueError(f"unknown image adaptor {adaptor!r}; expected one of {IMAGE_ADAPTORS}")
