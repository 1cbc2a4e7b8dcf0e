"""Dropout with its CPU masks drawn from uniform numbers.

``F.dropout`` on CPU draws its mask with ``bernoulli_``, which takes about twice as long
as ``torch.rand``; dropout was about 4% of a CPU training step of ``ofasys_tiny``
(benchmarks/train_speed.py). ``UniformDropout`` draws the same mask, keep with
probability ``1 - p`` and scale by ``1 / (1 - p)``, from ``rand >= p``. On other devices
(CUDA's fused kernel) it is ``F.dropout``.
"""
import torch
import torch.nn as nn
from fairseq.modules import FairseqDropout
from torch import Tensor


class UniformDropout(FairseqDropout):
    """``FairseqDropout`` (same options, same ``make_generation_fast_``) drawing CPU
    masks as ``rand >= p``."""

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        if x.device.type != "cpu" or not (0 < self.p < 1 and (self.training
                                                              or self.apply_during_inference)):
            return super().forward(x, inplace)  # (p = 1: zeros, as F.dropout)
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x.mul_(keep) if inplace else x * keep


def use_uniform_dropout(module: nn.Module) -> nn.Module:
    """Every ``FairseqDropout`` below ``module`` (fairseq's layers build their own)
    becomes a ``UniformDropout`` with the same settings; returns ``module``."""
    for name, child in module.named_children():
        if type(child) is FairseqDropout:
            uniform = UniformDropout(child.p, module_name=child.module_name)
            uniform.apply_during_inference = child.apply_during_inference
            setattr(module, name, uniform)
        else:
            use_uniform_dropout(child)
    return module
