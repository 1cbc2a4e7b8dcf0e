"""AUDIO as a target: log-mel spectrogram frames that a vocoder can turn back into sound.

The encoder's filterbanks (``features.py``) follow Kaldi, which no vocoder inverts; the
frames the decoder learns are torchaudio's ``MelSpectrogram`` (magnitude, Slaney mel
scale) of 50 ms Hann windows every 12.5 ms, 0-8 kHz, natural log floored at 1e-5: the
usual text-to-speech recipe (Tacotron 2), which Griffin-Lim or a neural vocoder trained on
the same settings turns back into a waveform (``vocoder.py``).
"""
import functools

import torch
import torchaudio.transforms as audio_transforms

from .decode import SAMPLE_RATE
from .features import MEL_BINS

N_FFT = 1024
WINDOW = int(0.05 * SAMPLE_RATE)  # samples of one window (50 ms)
HOP = int(0.0125 * SAMPLE_RATE)  # 12.5 ms
F_MIN, F_MAX = 0.0, SAMPLE_RATE / 2
LOG_FLOOR = 1e-5


def mel_frames(num_samples: int) -> int:
    """Frames of ``num_samples`` samples (centred windows: one per hop, plus one)."""
    return num_samples // HOP + 1


@functools.lru_cache(maxsize=1)
def _spectrogram() -> audio_transforms.MelSpectrogram:
    return audio_transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=N_FFT, win_length=WINDOW, hop_length=HOP, f_min=F_MIN, f_max=F_MAX,
        n_mels=MEL_BINS, power=1.0, norm="slaney", mel_scale="slaney")


def log_mel(waveform: torch.Tensor) -> torch.Tensor:
    """``T x 80`` log-mel frames of a mono 16 kHz waveform (``mel_frames`` of them)."""
    with torch.no_grad():
        return _spectrogram()(waveform.float()).clamp_min(LOG_FLOOR).log().t()


@functools.lru_cache(maxsize=1)
def inverse_mel_scale() -> audio_transforms.InverseMelScale:
    """Mel magnitudes -> linear-frequency magnitudes (least squares), for vocoders."""
    return audio_transforms.InverseMelScale(N_FFT // 2 + 1, n_mels=MEL_BINS,
                                            sample_rate=SAMPLE_RATE, f_min=F_MIN, f_max=F_MAX,
                                            norm="slaney", mel_scale="slaney")
