"""Continuous outputs as frames: what a modality whose target is a sequence of vectors
(TTS mel frames, motion poses, numbers) shares, so that it only says what a frame is.

* ``FrameHead``: the decoder reads each previous frame through a pre-net, and its states
  are projected to the next frame and a stop logit (Transformer-TTS's design).
* ``frame_loss``: L1 on the frame plus binary cross entropy on the stop flag, per frame.
* ``FrameModality``: a ``Modality`` with those as its output head, loss and generator
  (greedy autoregressive frames until the stop flag, ``decoding/frame_generator.py``).
"""
from typing import Any, List, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..decoding.frame_generator import generate_frames
from ..instruction import Slot
from .base import CONTINUOUS, Context, Modality


class FramePrediction(NamedTuple):
    frames: torch.Tensor  # N x F
    stop_logits: torch.Tensor  # N


class FrameHead(nn.Module):
    """Args:
        frame_dim: the size of one frame.
        embed_dim: the model width.
    """

    def __init__(self, frame_dim: int, embed_dim: int):
        super().__init__()
        self.prenet = nn.Sequential(nn.Linear(frame_dim, embed_dim), nn.ReLU(),
                                    nn.Linear(embed_dim, embed_dim))
        self.frame_projection = nn.Linear(embed_dim, frame_dim)
        self.stop_projection = nn.Linear(embed_dim, 1)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """What the decoder reads of each frame (``... x F -> ... x D``)."""
        return self.prenet(frames)

    def forward(self, states: torch.Tensor) -> FramePrediction:
        """The next frame and the stop logit from decoder states (``N x D``)."""
        return FramePrediction(self.frame_projection(states),
                               self.stop_projection(states).squeeze(-1))


def frame_loss(predicted: FramePrediction, frames: torch.Tensor,
               stop: torch.Tensor) -> torch.Tensor:
    """Per frame: mean absolute error over the frame, plus the stop flag's cross entropy."""
    return ((predicted.frames.float() - frames).abs().mean(-1)
            + F.binary_cross_entropy_with_logits(predicted.stop_logits.float(), stop,
                                                 reduction="none"))


class FrameModality(Modality):
    """A modality whose target is ``T x frame_dim`` frames (``target`` returns them as
    ``Target(frames, frames)``); subclasses say what a frame is."""

    output_kind = CONTINUOUS

    def frame_dim(self, settings: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def plan_settings(self, settings, slots):
        """The model decodes this modality when some planned slot is a target of it."""
        return {**settings, "decoded": any(s.side == "decoder" and not s.has("no_loss")
                                           for s in slots)}

    def build_output_head(self, settings, embed_dim: int) -> FrameHead:
        return FrameHead(self.frame_dim(settings), embed_dim)

    def loss(self, predicted: FramePrediction, frames, stop, slot: Slot) -> torch.Tensor:
        return frame_loss(predicted, frames, stop)

    def generate(self, model, sample, slot: Slot, ctx: Context, max_len: int) -> List[torch.Tensor]:
        return generate_frames(model, sample, self.name, max_len)
