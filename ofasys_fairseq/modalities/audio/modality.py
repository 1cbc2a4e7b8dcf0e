"""AUDIO: speech and sound as input. A cell names a sound file (or a segment of one),
or holds it encoded; the slot becomes normalized log-mel filterbanks that the ``conv``
adapter subsamples 4x into encoder positions.

    [AUDIO:wav] what is the text corresponding to the voice ? -> [TEXT:text]

Attributes: ``max_length=`` (seconds) refuses longer sounds as bad rows, or with
``crop`` keeps their first ``max_length`` seconds; ``preprocess=specaugment`` masks
frequency bands and time spans in training.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from fairseq.dataclass import FairseqDataclass

from ...instruction import AttrSpec, Slot
from ..base import ENCODER, FEATURES, Context, Modality, unique
from .adapter import AUDIO_ADAPTORS, AudioAdapter, subsampled_length
from .decode import AudioSegment, decode_segment, read_segment
from .features import (MEL_BINS, FeatureStatistics, filterbanks, frame_moments, num_frames,
                       spec_augment)

AUDIO = "AUDIO"
AUDIO_RECIPES = ("plain", "specaugment")


@dataclass
class AudioOptions(FairseqDataclass):
    """Task options of AUDIO slots."""
    audio_stats_utterances: int = field(default=1000, metadata={
        "help": "training sounds (a seeded sample) that the filterbanks' mean and standard "
                "deviation are computed on, once, before training; 0: all"})


class AudioModality(Modality):
    name = AUDIO
    attributes = {
        "max_length": AttrSpec("float", "longest sound in seconds: longer ones are bad rows, "
                                        "or cut with crop", min=0, min_exclusive=True,
                               sides=(ENCODER,)),
        "crop": AttrSpec("flag", "keep the first max_length seconds of longer sounds",
                         sides=(ENCODER,)),
    }
    sides = (ENCODER,)  # text-to-speech comes with the continuous output head
    choices = {"preprocess": AUDIO_RECIPES, "adaptor": AUDIO_ADAPTORS}
    input_kind = FEATURES
    output_kind = None
    fits_statistics = True
    ctc_alignable = True  # a transcript follows the sound in time

    def settings(self, cfg) -> Dict[str, Any]:
        if cfg.audio_stats_utterances < 0:
            raise ValueError(f"--audio-stats-utterances must be >= 0 (0: all), got "
                             f"{cfg.audio_stats_utterances}")
        return {"stats_utterances": cfg.audio_stats_utterances, "statistics": None}

    def plan_settings(self, settings, slots: Sequence[Slot]) -> Dict[str, Any]:
        """The adaptors the slots use (the model builds one adapter each)."""
        return {**settings, "adaptors": unique(self._adaptor(s) for s in slots)}

    @staticmethod
    def _adaptor(slot: Slot) -> str:
        return slot.get("adaptor") or AUDIO_ADAPTORS[0]

    def check_settings(self, settings, slots: Sequence[Slot]) -> None:
        for slot in slots:
            adaptor = self._adaptor(slot)
            if adaptor not in settings.get("adaptors", []) or settings.get("statistics") is None:
                raise ValueError(f"this model was not trained on {AUDIO} slots like {slot}: "
                                 f"it has no {adaptor!r} adapter and feature statistics")

    def check_slot(self, slot: Slot, template):
        if slot.has("crop") and slot.get("max_length") is None:
            return (slot.attr_positions.get("crop", slot.position),
                    f"{slot}: crop needs max_length= (the seconds to keep)")
        return None

    # -- cells ---------------------------------------------------------------------------
    def read(self, cell, slot: Slot, ctx: Context, decode: bool = True) -> AudioSegment:
        """The segment the cell names (checked from the sound's header), its waveform
        decoded with ``decode``."""
        if not isinstance(cell, str) or not cell.strip():
            raise ValueError(f"expected a sound file path, 'path#start-end', base64 or a "
                             f"data: URI for {slot}, found {cell!r}"[:200])
        segment = read_segment(cell.strip(), ctx.base_dir)
        limit = slot.get("max_length")
        if limit is not None and segment.seconds > limit:
            if not slot.has("crop"):
                raise ValueError(f"the sound lasts {segment.seconds:.2f} s, longer than "
                                 f"max_length={limit:g} (add crop to keep its start)")
            segment = segment.cropped(limit)
            ctx.notes[f"sounds of {slot} cut to max_length={limit:g} s"] += 1
        if num_frames(segment.num_samples) == 0:
            raise ValueError(f"the sound lasts {1000 * segment.seconds:.1f} ms, shorter "
                             f"than one 25 ms window")
        return decode_segment(segment) if decode else segment

    # -- statistics ------------------------------------------------------------------------
    def cell_statistics(self, value: AudioSegment, slot: Slot, ctx: Context) -> torch.Tensor:
        return frame_moments(filterbanks(decode_segment(value).waveform))

    def fit(self, settings, statistics: Sequence[torch.Tensor]) -> Dict[str, Any]:
        if not statistics:
            raise ValueError("no readable training sound to compute the AUDIO feature "
                             "statistics from")
        total = torch.stack(list(statistics)).sum(0)
        return {**settings, "statistics": FeatureStatistics.of(total)._asdict()}

    def statistics_sample_size(self, settings) -> int:
        return settings["stats_utterances"]

    # -- features ---------------------------------------------------------------------------
    def num_positions(self, value: AudioSegment, slot: Slot, ctx: Context) -> int:
        return int(subsampled_length(num_frames(value.num_samples)))

    def adapter_key(self, slot: Slot, settings) -> str:
        return f"audio_{self._adaptor(slot)}"

    def features(self, segment: AudioSegment, slot: Slot, ctx: Context, attached: Sequence[Any],
                 seed: Optional[int]) -> Tuple[torch.Tensor, List[Any]]:
        """``T x 80`` normalized filterbanks (masked in training with specaugment)."""
        if ctx.settings.get("statistics") is None:
            raise ValueError("the AUDIO feature statistics are missing: they are computed "
                             "on the training split before training (or come with the "
                             "checkpoint)")
        statistics = FeatureStatistics(**ctx.settings["statistics"])
        features = statistics.normalize(filterbanks(segment.waveform))
        if ctx.train and slot.get("preprocess") == "specaugment" and seed is not None:
            features = spec_augment(features, seed)
        return features, []

    def batch_key(self, features) -> Any:
        return AUDIO  # one padded group: lengths differ

    def collate(self, features: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        lengths = torch.tensor([f.size(0) for f in features])
        padded = features[0].new_zeros(len(features), int(lengths.max()), MEL_BINS)
        for row, f in enumerate(features):
            padded[row, :f.size(0)] = f
        return {"features": padded, "lengths": lengths}

    def build_adapters(self, settings, model_cfg, embed_dim: int):
        # a checkpoint from before AUDIO existed has no adaptors: it reads no sound
        return {f"audio_{adaptor}": AudioAdapter(MEL_BINS, embed_dim)
                for adaptor in settings.get("adaptors", [])}

    def text_metrics(self) -> List[str]:
        """A text about speech is its transcript: word error rate."""
        return ["wer"]
