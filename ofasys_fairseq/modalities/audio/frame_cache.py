"""A sound file's frames kept in memory between epochs (``--audio-frame-cache-mb``).

Reading a sound, resampling it to 16 kHz and computing its filterbanks (or mel frames)
takes about 1.4 ms a sound on one core, every epoch: for a small recognizer more than its
training step (``benchmarks/audio_pipeline.py``). The cache keeps the frames before
normalization and augmentation (SpecAugment still draws new masks every epoch), up to a
memory budget, the least recently used leaving first. Sounds held as bytes are not kept.
Each process (a data-loading worker too) has its own.
"""
import os
from collections import OrderedDict
from typing import Callable, Hashable, Optional, Tuple

import torch

from .decode import AudioSegment

MEGABYTE = 2 ** 20


class FrameCache:
    """Frames by (sound file, segment, kind), within ``budget_mb`` megabytes."""

    def __init__(self):
        self._frames: "OrderedDict[Hashable, torch.Tensor]" = OrderedDict()
        self.bytes = 0

    @staticmethod
    def key(segment: AudioSegment, kind: str) -> Optional[Tuple]:
        if not isinstance(segment.source, str):
            return None
        # a file written again (same path) is another sound
        modified = os.stat(segment.source).st_mtime_ns
        return segment.source, modified, segment.start, segment.frames, kind

    def holds(self, segment: AudioSegment, kind: str) -> bool:
        return self.key(segment, kind) in self._frames

    def frames(self, segment: AudioSegment, kind: str, budget_mb: int,
               compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The kept frames of ``segment``, else ``compute()``'s, kept within the budget
        (0: the cache is neither read nor filled). Callers must not change them in place."""
        if budget_mb <= 0:
            return compute()
        key = self.key(segment, kind)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        frames = compute()
        size = frames.numel() * frames.element_size()
        if key is None or size > budget_mb * MEGABYTE:
            return frames
        self._frames[key] = frames
        self.bytes += size
        while self.bytes > budget_mb * MEGABYTE:
            _, dropped = self._frames.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()
        return frames

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0


FRAME_CACHE = FrameCache()
