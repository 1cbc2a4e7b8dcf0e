"""Sound files' frames kept between epochs (``--audio-frame-cache-mb``): the same
examples as without the cache, no decoding once kept, a memory budget, and a rewritten
file read again."""
import os

import numpy as np
import pytest
import soundfile
import torch

from ofasys_fairseq.data.table import Table
from ofasys_fairseq.modalities.audio.decode import read_segment
from ofasys_fairseq.modalities.audio.features import filterbanks
from ofasys_fairseq.modalities.audio.frame_cache import FRAME_CACHE, MEGABYTE, FrameCache

from tests.helpers import instruction_task, write_jsonl

RECOGNITION = "[AUDIO:wav] what is said ? -> [TEXT:text]"
SPEAKING = "[TEXT:text] read it aloud -> [AUDIO:wav,frames_per_step=2]"


def tone(seconds: float, pitch: float) -> np.ndarray:
    t = np.arange(int(seconds * 22050)) / 22050
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32)


@pytest.fixture
def sounds(tmp_path):
    (tmp_path / "wavs").mkdir()
    rows = []
    for i in range(6):
        soundfile.write(tmp_path / "wavs" / f"{i}.wav", tone(0.3 + 0.1 * i, 200 + 50 * i),
                        22050)
        rows.append({"wav": f"wavs/{i}.wav", "text": f"sound {i}"})
    write_jsonl(tmp_path / "train.jsonl", rows)
    FRAME_CACHE.clear()
    yield tmp_path
    FRAME_CACHE.clear()


def items(root, instruction, **options):
    """The training examples of ``root``'s rows."""
    task = instruction_task(root, instruction, **options)
    task.prepare()
    table = Table(str(root / "train.jsonl"))
    dataset = task.dataset_for(table, task.bind_plan(table), with_target=True, train=True)
    return [dataset[i] for i in range(len(dataset))]


def tensors(example):
    """An example's sound frames: its input features, or its target frames."""
    return [f.values for f in example.features] + (
        [example.target] if isinstance(example.target, torch.Tensor) else [])


@pytest.mark.parametrize("instruction, kind", [(RECOGNITION, "filterbanks"),
                                               (SPEAKING, "mel")])
def test_kept_frames_give_the_examples_decoding_gives(sounds, instruction, kind):
    plain = items(sounds, instruction, audio_frame_cache_mb=0)
    assert FRAME_CACHE.bytes == 0
    first = items(sounds, instruction)
    segments = [read_segment(f"wavs/{i}.wav", str(sounds)) for i in range(6)]
    assert all(FRAME_CACHE.holds(s, kind) for s in segments)
    again = items(sounds, instruction)  # from the cache
    for examples in zip(plain, first, again):
        sounds_of = [tensors(e) for e in examples]
        assert len(sounds_of[0]) == 1
        assert all(torch.equal(sounds_of[0][0], other[0]) for other in sounds_of[1:])


def test_the_least_recently_used_frames_leave_first_within_the_budget(sounds):
    cache = FrameCache()
    segments = [read_segment(f"wavs/{i}.wav", str(sounds)) for i in range(3)]
    frames = torch.zeros(MEGABYTE // 4)  # one megabyte
    for segment in segments:
        cache.frames(segment, "filterbanks", 2, lambda: frames.clone())
    assert cache.bytes == 2 * MEGABYTE
    assert [cache.holds(s, "filterbanks") for s in segments] == [False, True, True]
    cache.frames(segments[1], "filterbanks", 2, lambda: pytest.fail("it was kept"))
    cache.frames(segments[0], "filterbanks", 2, lambda: frames.clone())  # 2 leaves, not 1
    assert [cache.holds(s, "filterbanks") for s in segments] == [True, True, False]
    # frames over the budget are given, not kept
    cache.frames(segments[2], "filterbanks", 1, lambda: torch.zeros(MEGABYTE))
    assert not cache.holds(segments[2], "filterbanks")
    # no budget: the cache is not read either
    fresh = torch.ones(3)
    assert cache.frames(segments[0], "filterbanks", 0, lambda: fresh) is fresh


def test_a_sound_written_again_is_read_again(sounds):
    path = sounds / "wavs" / "0.wav"

    def decoded():
        return filterbanks(torch.from_numpy(soundfile.read(str(path), dtype="float32")[0]))

    before = FRAME_CACHE.frames(read_segment(str(path), "."), "filterbanks", 10, decoded)
    soundfile.write(path, tone(0.3, 900), 22050)  # as long, another pitch
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1))  # even within the clock's tick
    again = read_segment(str(path), ".")
    assert not FRAME_CACHE.holds(again, "filterbanks")
    assert not torch.equal(before, FRAME_CACHE.frames(again, "filterbanks", 10, decoded))


def test_a_negative_budget_is_refused(sounds):
    with pytest.raises(ValueError, match=r"--audio-frame-cache-mb must be >= 0 \(0: none\)"):
        items(sounds, RECOGNITION, audio_frame_cache_mb=-1)
