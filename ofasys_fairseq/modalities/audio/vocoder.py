"""Vocoders: log-mel frames (``mel.py``'s settings) -> a waveform.

Griffin-Lim (through torchaudio) needs no download and is the default. A neural vocoder a
user brings (HiFi-GAN, ...) trained on the same mel settings plugs in by name:

    from ofasys_fairseq.modalities.audio.vocoder import Vocoder, register_vocoder
    register_vocoder("my_hifigan", lambda: MyHifiGan("/path/to/generator.pt"))

and is chosen with ``--audio-vocoder my_hifigan`` (fairseq-generate) or
``OFASys.from_pretrained(path, audio_vocoder="my_hifigan")``.
"""
import functools
from typing import Callable, Dict

import torch
import torchaudio.transforms as audio_transforms

from .decode import SAMPLE_RATE
from .mel import HOP, N_FFT, WINDOW, inverse_mel_scale

GRIFFIN_LIM_ITERATIONS = 32


class Vocoder:
    """Turns ``T x 80`` natural-log mel magnitudes into a mono waveform at
    ``sample_rate``."""

    sample_rate: int = SAMPLE_RATE

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GriffinLimVocoder(Vocoder):
    """Mel to linear magnitudes by least squares, then Griffin-Lim phase reconstruction
    (``GRIFFIN_LIM_ITERATIONS`` iterations, momentum 0.99) from zero phases: the same
    frames always give the same sound."""

    def __init__(self):
        self.griffin_lim = audio_transforms.GriffinLim(
            n_fft=N_FFT, win_length=WINDOW, hop_length=HOP, power=1.0,
            n_iter=GRIFFIN_LIM_ITERATIONS, rand_init=False)

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            magnitudes = inverse_mel_scale()(log_mel.float().cpu().exp().t())
            return self.griffin_lim(magnitudes).clamp(-1.0, 1.0)


VOCODERS: Dict[str, Callable[[], Vocoder]] = {"griffin_lim": GriffinLimVocoder}


def register_vocoder(name: str, factory: Callable[[], Vocoder]) -> None:
    """Make ``factory()`` the vocoder called ``name``."""
    if name in VOCODERS:
        raise ValueError(f"a vocoder named {name!r} is already registered")
    VOCODERS[name] = factory
    get_vocoder.cache_clear()


def check_vocoder(name: str) -> None:
    """ValueError unless a vocoder called ``name`` is registered (nothing is built)."""
    if name not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}: registered are {', '.join(VOCODERS)} "
                         f"(a package of yours registers its own with register_vocoder)")


@functools.lru_cache(maxsize=None)
def get_vocoder(name: str) -> Vocoder:
    """The vocoder called ``name`` (built once, when first used)."""
    check_vocoder(name)
    return VOCODERS[name]()
