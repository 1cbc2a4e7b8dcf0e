"""``ofasys-prepare webdataset``: a data file and its media as tar shards of a fixed
number of samples, read back as the same rows; a media cell that names no file is an
error naming its line and column, before any shard is complete."""
import tarfile

import pytest

from ofasys_fairseq.data.tar_shard import TarShard
from ofasys_fairseq.prepare import main
from tests.helpers import write_jsonl


def test_a_tsv_and_its_sounds_become_shards(tmp_path, capsys):
    (tmp_path / "wav").mkdir()
    lines = ["wav\ttext"]
    for i in range(5):
        (tmp_path / "wav" / f"{i}.WAV").write_bytes(b"RIFF" + bytes([i]) * 60)
        lines.append(f"wav/{i}.WAV\tsentence number {i}")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    main(["webdataset", str(tmp_path / "train.tsv"), str(tmp_path / "out"), "--subset", "train",
          "--media-columns", "wav", "--samples-per-shard", "2"])
    printed = capsys.readouterr().out
    assert f"wrote 2 rows to {tmp_path}/out/train-00000.tar" in printed
    assert f"wrote 1 rows to {tmp_path}/out/train-00002.tar" in printed
    with tarfile.open(tmp_path / "out" / "train-00002.tar") as tar:
        assert tar.getnames() == ["000000004.json", "000000004.wav.wav"]
    shard = TarShard(str(tmp_path / "out" / "train-00001.tar"))
    assert shard[1] == {"text": "sentence number 3", "wav": b"RIFF" + bytes([3]) * 60}


def test_a_media_cell_naming_no_file_is_located(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{"image": "missing.png", "caption": "x"}])
    with pytest.raises(SystemExit, match=r"ofasys-prepare webdataset: .*rows.jsonl, line 1, "
                                         r"column 'image': no such file with an extension "
                                         r"\(.jpg, .wav, ...\): .*missing.png"):
        main(["webdataset", str(tmp_path / "rows.jsonl"), str(tmp_path / "out"), "--subset",
              "train", "--media-columns", "image"])
