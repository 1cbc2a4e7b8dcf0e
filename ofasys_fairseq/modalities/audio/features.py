"""AUDIO features: 80-dim log-mel filterbanks (25 ms windows every 10 ms, Kaldi's
``fbank`` through ``torchaudio.compliance.kaldi``), normalized with the training split's
global mean and standard deviation, and SpecAugment for training.

The statistics are computed once, before training, on a seeded sample of the training
split's sounds, and travel in the checkpoint with the modality's settings: inference
normalizes exactly as training did.
"""
from typing import List, NamedTuple

import torch
import torchaudio.transforms as audio_transforms
from torchaudio.compliance import kaldi

from .decode import SAMPLE_RATE

MEL_BINS = 80
WINDOW_MS, HOP_MS = 25.0, 10.0
WINDOW = int(SAMPLE_RATE * WINDOW_MS / 1000)  # samples of one window
HOP = int(SAMPLE_RATE * HOP_MS / 1000)
# SpecAugment's LibriSpeech "LD" policy (Park et al. 2019): two frequency masks of up to
# 27 bins; two time masks of up to 100 frames, each at most a fifth of the utterance
FREQUENCY_MASKS, FREQUENCY_MASK_BINS = 2, 27
TIME_MASKS, TIME_MASK_FRAMES, TIME_MASK_SHARE = 2, 100, 0.2


def num_frames(num_samples: int) -> int:
    """Filterbank frames of ``num_samples`` 16 kHz samples (whole windows only)."""
    return 0 if num_samples < WINDOW else 1 + (num_samples - WINDOW) // HOP


def filterbanks(waveform: torch.Tensor) -> torch.Tensor:
    """``T x 80`` log-mel filterbanks of a mono 16 kHz waveform (samples in [-1, 1])."""
    if waveform.numel() < WINDOW:
        raise ValueError(f"the audio lasts {1000 * waveform.numel() / SAMPLE_RATE:.1f} ms, "
                         f"shorter than one {WINDOW_MS:g} ms window")
    # Kaldi's filterbanks expect 16-bit sample values
    return kaldi.fbank(waveform[None] * 32768, num_mel_bins=MEL_BINS, frame_length=WINDOW_MS,
                       frame_shift=HOP_MS, dither=0.0, sample_frequency=SAMPLE_RATE)


def frame_moments(features: torch.Tensor) -> torch.Tensor:
    """Summable moments of ``T x 80`` features: frame count, per-bin sums and sums of
    squares (float64)."""
    frames = features.double()
    return torch.cat([frames.new_tensor([frames.size(0)]), frames.sum(0), frames.pow(2).sum(0)])


class FeatureStatistics(NamedTuple):
    """Per-bin mean and standard deviation of the filterbanks."""

    mean: List[float]
    std: List[float]

    @classmethod
    def of(cls, moments: torch.Tensor) -> "FeatureStatistics":
        """From summed ``frame_moments``."""
        count = float(moments[0])
        if count == 0:
            raise ValueError("no audio frames to compute feature statistics from")
        mean = moments[1:1 + MEL_BINS] / count
        std = (moments[1 + MEL_BINS:] / count - mean.pow(2)).clamp_min(1e-10).sqrt()
        return cls(mean.tolist(), std.tolist())

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        return (features - torch.tensor(self.mean)) / torch.tensor(self.std)

    def denormalize(self, features: torch.Tensor) -> torch.Tensor:
        return features * torch.tensor(self.std) + torch.tensor(self.mean)


def spec_augment(features: torch.Tensor, seed: int) -> torch.Tensor:
    """Frequency and time masking of normalized ``T x 80`` features (masked values become
    0, the mean), drawn with ``seed``."""
    masked = features.t()[None].clone()  # 1 x 80 x T, as torchaudio's masking expects
    frequency = audio_transforms.FrequencyMasking(FREQUENCY_MASK_BINS)
    time = audio_transforms.TimeMasking(TIME_MASK_FRAMES, p=TIME_MASK_SHARE)
    with torch.random.fork_rng(devices=[]):
        # torchaudio draws from torch's global CPU generator: seed it for this item only
        torch.random.default_generator.manual_seed(seed)
        for _ in range(FREQUENCY_MASKS):
            masked = frequency(masked, mask_value=0.0)
        for _ in range(TIME_MASKS):
            masked = time(masked, mask_value=0.0)
    return masked[0].t()
