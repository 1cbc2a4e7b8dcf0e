"""Continuous outputs as frames: what a modality whose target is a sequence of vectors
(TTS mel frames, motion poses, numbers) shares, so that it only says what a frame is.

* ``FrameHead``: the decoder reads each previous frame through a pre-net, and its states
  are projected to the next frame and a stop logit (Transformer-TTS's design); an optional
  convolutional post-net refines each whole predicted sequence (Tacotron 2's).
* ``frame_loss``: L1 and MSE on the frame (before and after the post-net) plus binary
  cross entropy on the stop flag, per frame, weighted (``FrameLossWeights``).
* ``FrameModality``: a ``Modality`` with those as its output head, loss and generator
  (greedy autoregressive frames until the stop flag, ``decoding/frame_generator.py``).
"""
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ..decoding.frame_generator import generate_frames
from ..instruction import Slot
from .base import CONTINUOUS, Context, Modality


class FramePrediction(NamedTuple):
    frames: torch.Tensor  # N x F
    stop_logits: torch.Tensor  # N
    refined: Optional[torch.Tensor] = None  # N x F, the post-net's (when the head has one)


class FrameLossWeights(NamedTuple):
    """Weights of the frame loss's terms (``--frame-l1-weight`` ...)."""

    l1: float = 1.0
    mse: float = 1.0
    stop: float = 1.0


class PostNet(nn.Module):
    """Five 1-D convolutions over a whole predicted sequence (Tacotron 2's post-net) whose
    output is added to it: context from both sides, which the autoregressive steps lack.

    Args:
        frame_dim: the size of one frame.
        channels: the hidden convolutions' width.
        layers: how many convolutions.
        kernel_size: their width in frames (odd).
    """

    def __init__(self, frame_dim: int, channels: int, layers: int = 5, kernel_size: int = 5):
        super().__init__()
        sizes = [frame_dim] + [channels] * (layers - 1) + [frame_dim]
        self.convolutions = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2) for a, b in zip(sizes, sizes[1:]))

    def forward(self, frames: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """``B x T x F`` frames (``padding_mask`` B x T, True at padding) -> refined."""
        x = frames.masked_fill(padding_mask[..., None], 0.0).transpose(1, 2)
        for index, convolution in enumerate(self.convolutions):
            x = convolution(x)
            if index < len(self.convolutions) - 1:
                x = torch.tanh(x).masked_fill(padding_mask[:, None], 0.0)
        return frames + x.transpose(1, 2)


class FrameHead(nn.Module):
    """Args:
        frame_dim: the size of one frame.
        embed_dim: the model width.
        prenet_dropout: dropout on the pre-net, in training and generation alike (as in
            Tacotron: the decoder cannot lean on copying its previous frame).
        postnet: refine each predicted sequence with a ``PostNet``.
    """

    def __init__(self, frame_dim: int, embed_dim: int, prenet_dropout: float = 0.0,
                 postnet: bool = False):
        super().__init__()
        self.prenet = nn.Sequential(nn.Linear(frame_dim, embed_dim), nn.ReLU(),
                                    nn.Linear(embed_dim, embed_dim))
        self.prenet_dropout = prenet_dropout
        self.frame_projection = nn.Linear(embed_dim, frame_dim)
        self.stop_projection = nn.Linear(embed_dim, 1)
        self.postnet = PostNet(frame_dim, embed_dim) if postnet else None

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """What the decoder reads of each frame (``... x F -> ... x D``)."""
        first, activation, second = self.prenet
        return second(F.dropout(activation(first(frames)), self.prenet_dropout, training=True))

    def forward(self, states: torch.Tensor, rows: Optional[torch.Tensor] = None) -> FramePrediction:
        """The next frame and the stop logit from decoder states (``N x D``); with ``rows``
        (each state's sequence, sequences contiguous and in order) also the post-net's."""
        frames = self.frame_projection(states)
        refined = self.refine_rows(frames, rows) if rows is not None else None
        return FramePrediction(frames, self.stop_projection(states).squeeze(-1), refined)

    def refine_rows(self, frames: torch.Tensor, rows: torch.Tensor) -> Optional[torch.Tensor]:
        """``refine`` of the sequences of flattened ``frames`` (``rows``: each one's)."""
        if self.postnet is None:
            return None
        lengths = torch.bincount(rows).tolist()
        return torch.cat(self.refine([s for s in frames.split(lengths) if len(s)]))

    def refine(self, sequences: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Each whole sequence (``T x F``) through the post-net (unchanged without one)."""
        if self.postnet is None or not sequences:
            return list(sequences)
        lengths = torch.tensor([len(s) for s in sequences], device=sequences[0].device)
        padded = pad_sequence(list(sequences), batch_first=True)
        padding = torch.arange(padded.size(1), device=padded.device)[None] >= lengths[:, None]
        refined = self.postnet(padded.to(self.frame_projection.weight.dtype), padding)
        return [r[:n].to(s.dtype) for r, s, n in zip(refined, sequences, lengths.tolist())]


def frame_loss(predicted: FramePrediction, frames: torch.Tensor, stop: torch.Tensor,
               weights: FrameLossWeights = FrameLossWeights()) -> torch.Tensor:
    """Per frame: weighted mean absolute and mean squared error over the frame (of the
    prediction and of the post-net's, where there is one) and the stop flag's cross
    entropy."""
    outputs = [predicted.frames] + ([] if predicted.refined is None else [predicted.refined])
    loss = weights.stop * F.binary_cross_entropy_with_logits(
        predicted.stop_logits.float(), stop, reduction="none")
    for output in outputs:
        error = output.float() - frames
        loss = loss + weights.l1 * error.abs().mean(-1) + weights.mse * error.pow(2).mean(-1)
    return loss


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

    def loss(self, predicted: FramePrediction, frames, stop, slot: Slot,
             weights: FrameLossWeights = FrameLossWeights()) -> torch.Tensor:
        return frame_loss(predicted, frames, stop, weights)

    def generate(self, model, sample, slot: Slot, ctx: Context, max_len: int) -> List[torch.Tensor]:
        frames = generate_frames(model, sample, self.name, max_len)
        with torch.no_grad():
            return model.decoder.output_heads[self.name].refine(frames)
