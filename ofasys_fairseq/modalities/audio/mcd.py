"""Mel-cepstral distortion (``mcd``): how far a generated sound is from its reference, as
fairseq's text-to-speech task measures it (``fairseq.tasks.text_to_speech``): 13 MFCCs of
80-bin log-mels (50 ms Hann windows, 12.5 ms hop), aligned by dynamic time warping; the
summed distances along the path over the reference's frame count. Lower is better: a
Griffin-Lim resynthesis of a recording is ~0.6 from it, another sentence ~7, silence ~20.

``fairseq-generate --scoring mcd`` reads the sounds whose paths the T- and D- lines print.
"""
from dataclasses import dataclass
from typing import Dict, Sequence

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import BaseScorer, register_scorer

from ...scoring.validation_metrics import register_metric
from .decode import SAMPLE_RATE, decode_segment, read_segment

# a distortion of this much or more counts 0 in a multitask run's selection score
MCD_ZERO_SCORE = 10.0
register_metric("mcd", "_mcd_distance", "_mcd_frames", scale=1.0, lower_is_better=True,
                zero_score_at=MCD_ZERO_SCORE)


def mcd_stats(generated: Sequence[torch.Tensor],
              references: Sequence[torch.Tensor]) -> Dict[str, float]:
    """Summed DTW distance and reference frames of 16 kHz waveforms (``mcd`` = their
    ratio, over any number of batches)."""
    # fairseq's module registers its task on import (only needed here)
    from fairseq.tasks.text_to_speech import batch_mel_cepstral_distortion

    if not references:
        return {"_mcd_distance": 0.0, "_mcd_frames": 0}
    aligned = batch_mel_cepstral_distortion([r.float() for r in references],
                                            [g.float() for g in generated], SAMPLE_RATE,
                                            normalize_type=None)
    return {"_mcd_distance": float(sum(distance for distance, _ in aligned)),
            "_mcd_frames": sum(path[-1].size(0) for _, path in aligned)}


def read_sound(path: str) -> torch.Tensor:
    """The mono 16 kHz waveform of a sound file (``path#start-end`` for a segment)."""
    return decode_segment(read_segment(path, ".")).waveform


@dataclass
class McdScorerConfig(FairseqDataclass):
    pass


@register_scorer("mcd", dataclass=McdScorerConfig)
class McdScorer(BaseScorer):
    """``fairseq-generate --scoring mcd``: the distortion of each generated sound (D- line)
    from its reference (T- line), both paths of sound files."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.distance, self.frames = 0.0, 0

    def add_string(self, ref: str, pred: str) -> None:
        stats = mcd_stats([read_sound(pred.strip())], [read_sound(ref.strip())])
        self.distance += stats["_mcd_distance"]
        self.frames += stats["_mcd_frames"]

    def score(self) -> float:
        return self.distance / max(self.frames, 1)

    def result_string(self) -> str:
        return f"MCD: {self.score():.3f}"
