"""``ofasys-prepare librispeech`` on a tiny tree in LibriSpeech's layout: every
utterance with its transcript becomes a row whose sound the AUDIO modality reads; what
cannot be paired is counted with its reason; re-running rewrites the same files."""
import json
import os

import numpy as np
import pytest
import soundfile

from ofasys_fairseq.instruction import Instruction
from ofasys_fairseq.modalities import Context, get_modality
from ofasys_fairseq.prepare import main
from ofasys_fairseq.prepare.librispeech import convert_librispeech, parse_splits


def write_chapter(root, split, speaker, chapter, lines, flacs):
    folder = root / split / speaker / chapter
    folder.mkdir(parents=True)
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(f"{l}\n" for l in lines))
    for utterance in flacs:
        t = np.arange(8000) / 16000
        soundfile.write(folder / f"{utterance}.flac", 0.2 * np.sin(2 * np.pi * 300 * t), 16000)


@pytest.fixture
def librispeech(tmp_path):
    root = tmp_path / "LibriSpeech"
    write_chapter(root, "train-clean-100", "19", "198",
                  ["19-198-0000 NORTHANGER ABBEY", "19-198-0001 CHAPTER ONE",
                   "19-198-0002 NO ONE WHO HAD EVER SEEN", "19-198-0003"],
                  ["19-198-0000", "19-198-0001", "19-198-0003", "19-198-0009"])
    write_chapter(root, "train-clean-100", "26", "495", ["26-495-0000 THE FIRST"],
                  ["26-495-0000"])
    write_chapter(root, "dev-clean", "84", "121123", ["84-121123-0000 GO DO YOU HEAR"],
                  ["84-121123-0000"])
    return root


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_utterances_become_rows_and_the_rest_is_counted(librispeech, tmp_path, capsys):
    out = tmp_path / "out"
    main(["librispeech", str(librispeech), str(out)])
    train = rows(out / "train.jsonl")
    assert [r["id"] for r in train] == ["19-198-0000", "19-198-0001", "26-495-0000"]
    assert train[0] == {"wav": "../LibriSpeech/train-clean-100/19/198/19-198-0000.flac",
                        "text": "NORTHANGER ABBEY", "speaker": "19", "chapter": "198",
                        "id": "19-198-0000"}
    assert [r["text"] for r in rows(out / "valid.jsonl")] == ["GO DO YOU HEAR"]
    assert not (out / "test.jsonl").exists()  # no test-clean folder
    printed = capsys.readouterr().out
    assert f"wrote 3 rows to {out / 'train.jsonl'}" in printed
    assert "skipped 1: transcript line without its .flac file" in printed  # 0002
    assert "skipped 1: transcript line without text" in printed  # 0003
    assert "skipped 1: .flac file without a transcript line" in printed  # 0009

    # the AUDIO modality reads every row's sound, relative to the output file
    audio, ctx = get_modality("AUDIO"), Context(None, base_dir=str(out))
    slot = Instruction.parse("[AUDIO:wav] -> [TEXT:text]").slots[0]
    assert all(audio.read(r["wav"], slot, ctx).waveform.numel() == 8000 for r in train)

    before = (out / "train.jsonl").read_bytes()
    main(["librispeech", str(librispeech), str(out)])  # idempotent
    assert (out / "train.jsonl").read_bytes() == before


def test_split_mapping_and_a_root_without_splits(librispeech, tmp_path):
    summary = convert_librispeech(str(librispeech), str(tmp_path / "out"),
                                  parse_splits("dev-clean=test"))
    assert list(summary.written) == [os.path.join(str(tmp_path / "out"), "test.jsonl")]
    with pytest.raises(ValueError, match="expected 'folder=subset'"):
        parse_splits("dev-clean")
    with pytest.raises(SystemExit, match="none of the split folders"):
        main(["librispeech", str(tmp_path), str(tmp_path / "out")])
