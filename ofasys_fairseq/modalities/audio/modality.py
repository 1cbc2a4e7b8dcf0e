"""AUDIO: speech and sound, as input and as output. A cell names a sound file (or a
segment of one), or holds it encoded.

As an input the slot becomes normalized log-mel filterbanks that the ``conv`` adapter
subsamples 4x into encoder positions:

    [AUDIO:wav] what is the text corresponding to the voice ? -> [TEXT:text]

As a target (text-to-speech) it is normalized log-mel frames (``mel.py``), predicted
``frames_per_step`` at a time through a pre-net / stop-flag head and a post-net
(``modalities/frames.py``), turned into a waveform by a vocoder (``vocoder.py``) and scored
by mel-cepstral distortion (``mcd.py``):

    [TEXT:text] -> [AUDIO:wav,frames_per_step=2]

Attributes: ``max_length=`` (seconds) refuses longer input sounds as bad rows, or with
``crop`` keeps their first ``max_length`` seconds; ``preprocess=specaugment`` masks
frequency bands and time spans of inputs in training.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import soundfile
import torch
from fairseq.dataclass import FairseqDataclass

from ...instruction import AttrSpec, Slot
from ..base import DECODER, ENCODER, FEATURES, Context, Target, unique
from ..frames import FrameHead, FrameModality
from .adapter import AUDIO_ADAPTORS, AudioAdapter, subsampled_length
from .decode import SAMPLE_RATE, AudioSegment, decode_segment, read_segment, resampled
from .features import (MEL_BINS, FeatureStatistics, filterbanks, frame_moments, num_frames,
                       spec_augment)
from .frame_cache import FRAME_CACHE
from .mcd import mcd_stats
from .mel import LOG_FLOOR, log_mel, mel_frames
from .vocoder import check_vocoder, get_vocoder

AUDIO = "AUDIO"
AUDIO_RECIPES = ("plain", "specaugment")
# statistics of input filterbanks and of target mel frames, in the settings
INPUT_STATISTICS, TARGET_STATISTICS = "statistics", "target_statistics"
PRENET_DROPOUT = 0.5  # Tacotron's: in training and generation
# the pre-net's dropout in generation is drawn from it: the same batch, the same sounds
GENERATION_SEED = 1


@dataclass
class AudioOptions(FairseqDataclass):
    """Task options of AUDIO slots."""
    audio_stats_utterances: int = field(default=1000, metadata={
        "help": "training sounds (a seeded sample) that the mean and standard deviation of "
                "input filterbanks and target mel frames are computed on, once, before "
                "training; 0: all"})
    audio_vocoder: Optional[str] = field(default=None, metadata={
        "help": "vocoder turning generated mel frames into sound: griffin_lim (default) or "
                "one a --user-dir package registers (modalities/audio/vocoder.py)"})
    audio_frame_cache_mb: int = field(default=1024, metadata={
        "help": "memory (MB, per process) keeping sound files' filterbanks and mel frames "
                "between epochs instead of decoding them again; 0: none"})


class Sound(NamedTuple):
    """A generated sound: what ``OFASys.inference`` returns for an AUDIO target."""

    waveform: torch.Tensor  # mono samples in [-1, 1]
    sample_rate: int
    log_mel: torch.Tensor  # T x 80, the frames the vocoder read

    def save(self, path: str) -> None:
        """Write the sound to ``path`` (format from its extension: .wav, .flac, .ogg)."""
        soundfile.write(path, self.waveform.cpu().numpy(), self.sample_rate)


class AudioModality(FrameModality):
    name = AUDIO
    attributes = {
        "max_length": AttrSpec("float", "longest sound in seconds: longer ones are bad rows, "
                                        "or cut with crop", min=0, min_exclusive=True,
                               sides=(ENCODER,)),
        "crop": AttrSpec("flag", "keep the first max_length seconds of longer sounds",
                         sides=(ENCODER,)),
        "frames_per_step": AttrSpec("int", "mel frames the decoder predicts per step "
                                           "(default 1)", min=1, max=16, sides=(DECODER,)),
    }
    choices = {"preprocess": AUDIO_RECIPES, "adaptor": AUDIO_ADAPTORS}
    input_kind = FEATURES
    fits_statistics = True
    ctc_alignable = True  # a transcript follows the sound in time
    # not part of the model: a checkpoint does not fix them
    run_options = ("vocoder", "frame_cache_mb")

    def settings(self, cfg) -> Dict[str, Any]:
        if cfg.audio_stats_utterances < 0:
            raise ValueError(f"--audio-stats-utterances must be >= 0 (0: all), got "
                             f"{cfg.audio_stats_utterances}")
        if cfg.audio_frame_cache_mb < 0:
            raise ValueError(f"--audio-frame-cache-mb must be >= 0 (0: none), got "
                             f"{cfg.audio_frame_cache_mb}")
        vocoder = cfg.audio_vocoder or "griffin_lim"
        check_vocoder(vocoder)  # an unknown name fails before any work; built when used
        return {"stats_utterances": cfg.audio_stats_utterances, INPUT_STATISTICS: None,
                TARGET_STATISTICS: None, "vocoder": vocoder,
                "frame_cache_mb": cfg.audio_frame_cache_mb}

    def plan_settings(self, settings, slots: Sequence[Slot]) -> Dict[str, Any]:
        """The adaptors the input slots use (the model builds one adapter each), and the
        targets' frames per step (one for all: it shapes the output head)."""
        targets = [s for s in slots if s.side == DECODER]
        steps = unique(self._frames_per_step(s) for s in targets)
        if len(steps) > 1:
            raise ValueError(f"{AUDIO} targets of one model predict the same number of frames "
                             f"per step; the instructions ask for {steps}")
        return {**super().plan_settings(settings, slots),
                "adaptors": unique(self._adaptor(s) for s in slots if s.side == ENCODER),
                "frames_per_step": steps[0] if steps else 1}

    @staticmethod
    def _adaptor(slot: Slot) -> str:
        return slot.get("adaptor") or AUDIO_ADAPTORS[0]

    @staticmethod
    def _frames_per_step(slot: Slot) -> int:
        return slot.get("frames_per_step") or 1

    def check_settings(self, settings, slots: Sequence[Slot]) -> None:
        for slot in slots:
            if slot.side == DECODER:
                if not settings.get("decoded") or settings.get(TARGET_STATISTICS) is None:
                    raise ValueError(f"this model was not trained to generate {AUDIO} like "
                                     f"{slot}: it has no mel output head and statistics")
                if self._frames_per_step(slot) != settings["frames_per_step"]:
                    raise ValueError(f"{slot}: this model predicts "
                                     f"frames_per_step={settings['frames_per_step']}")
                continue
            adaptor = self._adaptor(slot)
            if adaptor not in settings.get("adaptors", []) or settings.get(INPUT_STATISTICS) is None:
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
        decoded with ``decode`` unless its frames are cached (it was decoded before)."""
        if not isinstance(cell, (str, bytes)) or not cell.strip():
            raise ValueError(f"expected a sound file path, 'path#start-end', base64 or a "
                             f"data: URI for {slot}, found {cell!r}"[:200])
        segment = read_segment(cell if isinstance(cell, bytes) else cell.strip(), ctx.base_dir)
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
        kept = (ctx.settings.get("frame_cache_mb", 0) > 0
                and FRAME_CACHE.holds(segment, self._frame_kind(slot)))
        return decode_segment(segment) if decode and not kept else segment

    # -- statistics ------------------------------------------------------------------------
    def cell_statistics(self, value: AudioSegment, slot: Slot,
                        ctx: Context) -> Tuple[str, torch.Tensor]:
        """Moments of an input's filterbanks or of a target's mel frames."""
        waveform = decode_segment(value).waveform
        if slot.side == DECODER:
            return TARGET_STATISTICS, frame_moments(log_mel(waveform))
        return INPUT_STATISTICS, frame_moments(filterbanks(waveform))

    def fit(self, settings, statistics: Sequence[Tuple[str, torch.Tensor]]) -> Dict[str, Any]:
        if not statistics:
            raise ValueError("no readable training sound to compute the AUDIO feature "
                             "statistics from")
        fitted = dict(settings)
        for kind in (INPUT_STATISTICS, TARGET_STATISTICS):
            moments = [m for k, m in statistics if k == kind]
            if moments:
                fitted[kind] = FeatureStatistics.of(torch.stack(moments).sum(0))._asdict()
        return fitted

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
        statistics = self._statistics(ctx, INPUT_STATISTICS)
        features = statistics.normalize(self._frames(segment, slot, ctx))
        if ctx.train and slot.get("preprocess") == "specaugment" and seed is not None:
            features = spec_augment(features, seed)
        return features, []

    @staticmethod
    def _frame_kind(slot: Slot) -> str:
        return "mel" if slot.side == DECODER else "filterbanks"

    def _frames(self, segment: AudioSegment, slot: Slot, ctx: Context) -> torch.Tensor:
        """The sound's filterbanks (an input) or mel frames (a target), not normalized,
        from the cache or computed (and kept there)."""
        def compute():
            waveform = (segment if segment.waveform is not None
                        else decode_segment(segment)).waveform
            return (log_mel if slot.side == DECODER else filterbanks)(waveform)

        return FRAME_CACHE.frames(segment, self._frame_kind(slot),
                                  ctx.settings.get("frame_cache_mb", 0), compute)

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

    @staticmethod
    def _statistics(ctx: Context, kind: str) -> FeatureStatistics:
        if ctx.settings.get(kind) is None:
            raise ValueError("the AUDIO feature statistics are missing: they are computed "
                             "on the training split before training (or come with the "
                             "checkpoint)")
        return FeatureStatistics(**ctx.settings[kind])

    # -- output: mel frames, frames_per_step at a time ---------------------------------------
    def frame_dim(self, settings) -> int:
        return settings["frames_per_step"] * MEL_BINS

    def build_output_head(self, settings, embed_dim: int) -> FrameHead:
        return FrameHead(self.frame_dim(settings), embed_dim, prenet_dropout=PRENET_DROPOUT,
                         postnet=True)

    def target_length(self, value: AudioSegment, slot: Slot, ctx: Context) -> int:
        return math.ceil(mel_frames(value.num_samples) / self._frames_per_step(slot))

    def target(self, value: AudioSegment, slot: Slot, ctx: Context, rng) -> Target:
        """Normalized mel frames, ``frames_per_step`` to a row (the last row filled up
        with silence)."""
        statistics = self._statistics(ctx, TARGET_STATISTICS)
        frames = statistics.normalize(self._frames(value, slot, ctx))
        step = self._frames_per_step(slot)
        missing = -len(frames) % step
        silence = statistics.normalize(torch.full((missing, MEL_BINS), math.log(LOG_FLOOR)))
        steps = torch.cat([frames, silence]).reshape(-1, step * MEL_BINS)
        return Target(steps, steps)

    def reference(self, value: AudioSegment, slot: Slot, ctx: Context) -> AudioSegment:
        return value

    def postprocess(self, frames: torch.Tensor, slot: Slot, ctx: Context,
                    output_context: Any) -> Sound:
        """Generated frames -> the vocoder's waveform."""
        statistics = self._statistics(ctx, TARGET_STATISTICS)
        mels = statistics.denormalize(frames.float().cpu().reshape(-1, MEL_BINS))
        vocoder = get_vocoder(ctx.settings.get("vocoder") or "griffin_lim")
        return Sound(vocoder(mels), vocoder.sample_rate, mels)

    def generate(self, model, sample, slot: Slot, ctx: Context, max_len: int) -> List[torch.Tensor]:
        device = sample["net_input"]["src_tokens"].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(GENERATION_SEED)
            return super().generate(model, sample, slot, ctx, max_len)

    def metrics(self, slot: Slot, template) -> List[str]:
        return ["mcd"]

    def metric_stats(self, predictions: Sequence[Sound], references: Sequence[AudioSegment],
                     slot: Slot, metrics, corpus) -> Dict[str, float]:
        generated = [resampled(p.waveform, p.sample_rate) for p in predictions]
        return mcd_stats(generated, [decode_segment(r).waveform if r.waveform is None
                                     else r.waveform for r in references])

    def save_output(self, value, path_stem: str) -> str:
        """A generated ``Sound`` or a reference segment (at 16 kHz) as ``path_stem.wav``."""
        path = f"{path_stem}.wav"
        if isinstance(value, AudioSegment):
            waveform = (value.waveform if value.waveform is not None
                        else decode_segment(value).waveform)
            soundfile.write(path, waveform.numpy(), SAMPLE_RATE)
        else:
            value.save(path)
        return path
