"""Reading an AUDIO cell: a sound file (wav, flac, mp3, ogg: whatever libsndfile reads,
through ``soundfile``), ``path#start-end`` for a segment in seconds, base64 bytes, or a
``data:audio/...;base64,`` URI. Any sample rate and channel count: the decoded waveform
is the channels' mean, resampled to 16 kHz (``torchaudio.transforms.Resample``).

A scan of a whole file reads only each sound's header (``soundfile.info``): its length
is all the batching needs.
"""
import functools
import io
import os
import re
from typing import NamedTuple, Optional, Union

import soundfile
import torch
import torchaudio.transforms as audio_transforms

from ..encoded import base64_bytes, data_uri_bytes, resolve_path

SAMPLE_RATE = 16000
_SEGMENT = re.compile(r"^(?P<path>.+)#(?P<start>\d+(?:\.\d*)?)-(?P<end>\d+(?:\.\d*)?)$")


class AudioSegment(NamedTuple):
    """A sound, or the part of one a cell names.

    Args:
        source: the file's path, or the encoded bytes.
        sample_rate: the file's sample rate.
        start: the segment's first frame, at ``sample_rate``.
        frames: the segment's length, at ``sample_rate``.
        waveform: the decoded mono 16 kHz samples (float32), once decoded.
    """

    source: Union[str, bytes]
    sample_rate: int
    start: int
    frames: int
    waveform: Optional[torch.Tensor] = None

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def num_samples(self) -> int:
        """Samples at 16 kHz (as ``torchaudio``'s resampling makes them)."""
        return -(-SAMPLE_RATE * self.frames // self.sample_rate)

    def cropped(self, seconds: float) -> "AudioSegment":
        """The first ``seconds`` of the segment (not decoded yet)."""
        return self._replace(frames=min(self.frames, int(seconds * self.sample_rate)),
                             waveform=None)


def read_segment(cell: Union[str, bytes], base_dir: str) -> AudioSegment:
    """The segment a cell names (or holds: a sound file's bytes, as from a tar shard),
    from the sound's header. Raises ValueError saying what the cell was taken to be and
    what is wrong with it."""
    if isinstance(cell, bytes):
        return _whole(cell, "encoded bytes")
    data = data_uri_bytes(cell, "data:audio/wav;base64,<payload>")
    if data is not None:
        return _whole(data, "data: URI")
    path, segment = resolve_path(cell, base_dir), _SEGMENT.match(cell)
    if os.path.isfile(path):
        return _whole(path, path)
    if segment:
        path = resolve_path(segment["path"], base_dir)
        if os.path.isfile(path):
            return _segment(path, float(segment["start"]), float(segment["end"]))
    data = base64_bytes(cell)
    if data is not None:
        return _whole(data, "base64")
    raise ValueError(f"no such audio file: {path} (the cell is neither an existing file, "
                     f"'path#start-end' in seconds, base64, nor a data: URI)")


def decode_segment(segment: AudioSegment) -> AudioSegment:
    """``segment`` with its waveform: mono, 16 kHz, float32."""
    try:
        samples, rate = soundfile.read(_file(segment.source), start=segment.start,
                                       frames=segment.frames, dtype="float32",
                                       always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise ValueError(f"cannot decode the audio ({_name(segment.source)}): {error}") from None
    if len(samples) == 0:
        raise ValueError(f"the audio ({_name(segment.source)}) holds no samples")
    return segment._replace(waveform=resampled(torch.from_numpy(samples).mean(1), rate))


def resampled(waveform: torch.Tensor, rate: int) -> torch.Tensor:
    """A mono waveform at ``rate`` Hz, at 16 kHz."""
    return waveform if rate == SAMPLE_RATE else _resampler(rate)(waveform)


@functools.lru_cache(maxsize=8)
def _resampler(rate: int) -> audio_transforms.Resample:
    # the transform keeps its filter kernel: computing it each call took most of the time
    return audio_transforms.Resample(rate, SAMPLE_RATE)


def _whole(source: Union[str, bytes], name: str) -> AudioSegment:
    info = _info(source, name)
    if info.frames <= 0:
        raise ValueError(f"the audio ({name}) is empty")
    return AudioSegment(source, info.samplerate, 0, info.frames)


def _segment(path: str, start: float, end: float) -> AudioSegment:
    info = _info(path, path)
    duration = info.frames / info.samplerate
    if not start < end:
        raise ValueError(f"the segment {start:g}-{end:g} s of {path} is empty (start must "
                         f"be before end)")
    first, last = int(round(start * info.samplerate)), int(round(end * info.samplerate))
    if last > info.frames:
        raise ValueError(f"the segment {start:g}-{end:g} s ends after the end of {path} "
                         f"({duration:.3f} s)")
    return AudioSegment(path, info.samplerate, first, last - first)


def _info(source: Union[str, bytes], name: str):
    try:
        return soundfile.info(_file(source))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise ValueError(f"cannot read the audio ({name}): {error}") from None


def _file(source: Union[str, bytes]):
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _name(source: Union[str, bytes]) -> str:
    return "encoded bytes" if isinstance(source, bytes) else source
