"""AUDIO cells: every accepted form decodes to the same mono 16 kHz samples, segments,
and each kind of bad cell is refused with what is wrong (the dataset adds file, line
and column)."""
import base64
import io

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as audio_functional

from ofasys_fairseq.data.table import DataError
from ofasys_fairseq.instruction import Instruction, InstructionError
from ofasys_fairseq.modalities import Context, get_modality
from ofasys_fairseq.modalities.audio.decode import SAMPLE_RATE, decode_segment, read_segment
from ofasys_fairseq.plan import TaskPlan

from tests.helpers import instruction_task, write_jsonl

RATE = 22050  # as eSpeak NG writes


def tone(seconds: float = 0.5, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t) * np.linspace(0.2, 1.0, t.size)
    return np.stack([mono] * channels, axis=1).astype(np.float32)


def encoded(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


def waveform(cell: str, base_dir) -> torch.Tensor:
    return decode_segment(read_segment(cell, str(base_dir))).waveform


@pytest.fixture
def wav(tmp_path):
    (tmp_path / "sounds").mkdir()
    data = encoded(tone(), "WAV")
    (tmp_path / "sounds" / "a.wav").write_bytes(data)
    return data


def test_path_base64_and_data_uri_decode_to_the_same_samples(tmp_path, wav):
    expected = audio_functional.resample(torch.from_numpy(tone()[:, 0]), RATE, SAMPLE_RATE)
    forms = ["sounds/a.wav", str(tmp_path / "sounds" / "a.wav"),
             base64.b64encode(wav).decode(),
             "data:audio/wav;base64," + base64.b64encode(wav).decode()]
    for cell in forms:
        decoded = waveform(cell, tmp_path)
        assert decoded.dtype == torch.float32
        assert decoded.numel() == -(-SAMPLE_RATE * int(0.5 * RATE) // RATE)  # 16 kHz
        torch.testing.assert_close(decoded, expected, atol=2e-4, rtol=0)  # 16-bit WAV


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_compressed_formats_decode(tmp_path, fmt):
    (tmp_path / f"a.{fmt.lower()}").write_bytes(encoded(tone(1.0), fmt))
    decoded = waveform(f"a.{fmt.lower()}", tmp_path)
    assert abs(decoded.numel() - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # codecs pad a little
    assert decoded.abs().max() > 0.3


def test_channels_are_averaged_and_any_rate_resampled(tmp_path):
    stereo = tone(0.5, 44100, channels=2)
    stereo[:, 1] = 0  # the mean halves the signal
    (tmp_path / "s.wav").write_bytes(encoded(stereo, "WAV", 44100))
    decoded = waveform("s.wav", tmp_path)
    expected = audio_functional.resample(torch.from_numpy(stereo[:, 0] / 2), 44100, SAMPLE_RATE)
    torch.testing.assert_close(decoded, expected, atol=2e-4, rtol=0)


def test_a_segment_in_seconds(tmp_path, wav):
    whole = waveform("sounds/a.wav", tmp_path)
    part = waveform("sounds/a.wav#0.1-0.3", tmp_path)
    assert part.numel() == int(0.2 * SAMPLE_RATE)
    # resampled on its own, the segment matches the whole away from its edges
    torch.testing.assert_close(part[200:-200], whole[1600 + 200:4800 - 200], atol=5e-3, rtol=0)
    assert waveform("sounds/a.wav#0.4-0.5", tmp_path).numel() == int(0.1 * SAMPLE_RATE)


@pytest.mark.parametrize("cell, message", [
    ("sounds/missing.wav", "no such audio file: .*missing.wav"),
    ("sounds/a.wav#0.3-0.1", "is empty \\(start must be before end\\)"),
    ("sounds/a.wav#0.4-0.6", "ends after the end of .*a.wav \\(0.500 s\\)"),
    ("sounds/b.wav#0.1-0.2", "no such audio file: .*sounds/b.wav \\(the cell"),
    ("data:audio/wav,abc", "a data: URI must look like 'data:audio/wav;base64,<payload>'"),
])
def test_bad_cells_say_what_is_wrong(tmp_path, wav, cell, message):
    with pytest.raises(ValueError, match=message):
        read_segment(cell, str(tmp_path))


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "text.wav").write_text("this is not a sound file")
    with pytest.raises(ValueError, match="cannot read the audio .*text.wav"):
        read_segment("text.wav", str(tmp_path))
    (tmp_path / "empty.wav").write_bytes(encoded(np.zeros((0, 1), np.float32), "WAV"))
    with pytest.raises(ValueError, match="the audio .*empty.wav.* is empty"):
        read_segment("empty.wav", str(tmp_path))
    garbage = base64.b64encode(b"\x00" * 200).decode()
    with pytest.raises(ValueError, match="cannot read the audio \\(base64\\)"):
        read_segment(garbage, str(tmp_path))


# --- the modality's read: lengths and max_length ---------------------------------------------

def slot_of(instruction: str):
    return Instruction.parse(instruction).slots[0]


def context(tmp_path) -> Context:
    return Context(None, base_dir=str(tmp_path))


def test_shorter_than_one_window_is_refused(tmp_path):
    (tmp_path / "click.wav").write_bytes(encoded(tone(0.02), "WAV"))
    with pytest.raises(ValueError, match="lasts 20.0 ms, shorter than one 25 ms window"):
        get_modality("AUDIO").read("click.wav", slot_of("[AUDIO:a] -> [TEXT:t]"),
                                   context(tmp_path), decode=False)


def test_max_length_refuses_or_crops(tmp_path, wav):
    audio = get_modality("AUDIO")
    refusing = slot_of("[AUDIO:a,max_length=0.25] -> [TEXT:t]")
    with pytest.raises(ValueError, match="lasts 0.50 s, longer than max_length=0.25 "
                                         "\\(add crop to keep its start\\)"):
        audio.read("sounds/a.wav", refusing, context(tmp_path))
    cropping = slot_of("[AUDIO:a,max_length=0.25,crop] -> [TEXT:t]")
    ctx = context(tmp_path)
    cropped = audio.read("sounds/a.wav", cropping, ctx)
    assert cropped.waveform.numel() == SAMPLE_RATE // 4
    assert sum(ctx.notes.values()) == 1  # logged after the dataset's scan
    assert audio.num_positions(cropped, cropping, ctx) == 6  # 23 frames -> 12 -> 6


def test_crop_without_max_length_is_an_instruction_error(tmp_path):
    text = "[AUDIO:a,crop] -> [TEXT:t]"
    with pytest.raises(InstructionError, match="crop needs max_length=") as error:
        TaskPlan.parse(text)
    assert error.value.position == text.index("crop")


def test_frames_per_step_belongs_to_a_target_and_crop_to_an_input():
    assert TaskPlan.parse("[TEXT:t] -> [AUDIO:a,frames_per_step=2]").target.get(
        "frames_per_step") == 2
    with pytest.raises(InstructionError, match="frames_per_step"):
        TaskPlan.parse("[AUDIO:a,frames_per_step=2] -> [TEXT:t]")
    with pytest.raises(InstructionError, match="max_length"):
        TaskPlan.parse("[TEXT:t] -> [AUDIO:a,max_length=3]")


def test_the_dataset_names_file_line_and_column(tmp_path, wav):
    (tmp_path / "text.wav").write_text("not a sound")
    write_jsonl(tmp_path / "train.jsonl", [{"a": "sounds/a.wav", "t": "one"},
                                           {"a": "text.wav", "t": "two"}])
    task = instruction_task(tmp_path, "[AUDIO:a] -> [TEXT:t]")
    with pytest.raises(DataError) as error:
        task.prepare()
    assert (error.value.path, error.value.line, error.value.column) == \
        (str(tmp_path / "train.jsonl"), 2, "a")
    assert "cannot read the audio" in str(error.value)
