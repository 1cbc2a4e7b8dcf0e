"""The AUDIO adapter: normalized filterbanks -> encoder positions at the model width.

Two 1-D convolutions of stride 2 (4x subsampling: one position per 40 ms), each followed
by GELU, then a layer norm and sinusoidal positions, which exist for any length. Frames
past a row's length are zeroed before the second convolution, so a row's output does not
depend on the longer rows it is batched with.
"""
import math

import torch
import torch.nn as nn
from torch import Tensor

from ..base import AdapterOutput

KERNEL, STRIDE = 3, 2
AUDIO_ADAPTORS = ("conv",)


def subsampled_length(frames):
    """Positions after the two convolutions (``ceil(ceil(frames / 2) / 2)``); ints or
    tensors."""
    for _ in range(2):
        frames = (frames + STRIDE - 1) // STRIDE
    return frames


def sinusoids(length: int, dim: int, device=None) -> Tensor:
    """``length x dim`` sine / cosine positions (Vaswani et al. 2017)."""
    half = dim // 2
    rates = torch.exp(-math.log(10000.0) * torch.arange(half, device=device) / max(half - 1, 1))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * rates[None]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(table, (0, dim - 2 * half))


class AudioAdapter(nn.Module):
    """Args:
        feature_dim: filterbank bins per frame.
        embed_dim: the model width.
    """

    def __init__(self, feature_dim: int, embed_dim: int):
        super().__init__()
        self.convolutions = nn.ModuleList([
            nn.Conv1d(feature_dim, embed_dim, KERNEL, STRIDE, padding=KERNEL // 2),
            nn.Conv1d(embed_dim, embed_dim, KERNEL, STRIDE, padding=KERNEL // 2)])
        self.content_norm = nn.LayerNorm(embed_dim)

    def forward(self, features: Tensor, lengths: Tensor) -> AdapterOutput:
        """Args:
            features: ``B x T x F`` normalized filterbanks, zero past each row's length.
            lengths: ``B`` frames of each row.
        """
        x = features.transpose(1, 2)  # B x F x T
        for convolution in self.convolutions:
            x = nn.functional.gelu(convolution(x))
            lengths = (lengths + STRIDE - 1) // STRIDE
            x = x * _valid(lengths, x.size(2))[:, None].to(x.dtype)
        x = self.content_norm(x.transpose(1, 2))  # B x L x D
        x = x + sinusoids(x.size(1), x.size(2), x.device).to(x.dtype)
        return AdapterOutput(x, ~_valid(lengths, x.size(1)))


def _valid(lengths: Tensor, width: int) -> Tensor:
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]
