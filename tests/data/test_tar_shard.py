"""WebDataset tar shards read as rows: the same rows as the file they were written from,
by index and as a stream, media as bytes, bad samples located by shard and key."""
import io
import json
import tarfile

import pytest
from PIL import Image

from ofasys_fairseq.data.table import DataError, InvalidRows, Table
from ofasys_fairseq.data.tar_shard import TarShard
from ofasys_fairseq.prepare.webdataset_shards import write_shards
from tests.helpers import instruction_task, sentences, write_jsonl

CAPTIONS = "[IMAGE:image] what does the image describe? -> [TEXT:caption]"


def captioned_images(directory, count: int):
    """``count`` rows of a small PNG (a colour per row) and a caption, as train.jsonl."""
    (directory / "images").mkdir(parents=True)
    rows = []
    for i, caption in enumerate(sentences(count, seed=11)):
        Image.new("RGB", (16, 12), (20 * i % 256, 90, 200)).save(directory / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "caption": caption, "id": i})
    write_jsonl(directory / "train.jsonl", rows)
    return rows


def test_shards_hold_the_rows_and_media_they_were_written_from(tmp_path):
    rows = captioned_images(tmp_path / "src", 7)
    summary = write_shards(str(tmp_path / "src" / "train.jsonl"), str(tmp_path / "out"), "train",
                           ["image"], samples_per_shard=3)
    assert list(summary.written.values()) == [3, 3, 1]
    shards = [TarShard(path) for path in summary.written]
    assert [len(s) for s in shards] == [3, 3, 1]
    with tarfile.open(shards[1].path) as tar:
        assert tar.getnames() == ["000000003.image.png", "000000003.json", "000000004.image.png",
                                  "000000004.json", "000000005.image.png", "000000005.json"]
    read = [shard[i] for shard in shards for i in range(len(shard))]
    for row, original in zip(read, rows):
        assert row["image"] == (tmp_path / "src" / original["image"]).read_bytes()
        assert {k: v for k, v in row.items() if k != "image"} == \
            {k: v for k, v in original.items() if k != "image"}
    streamed = [row for shard in shards for _, row in shard.stream_rows()]
    assert streamed == read
    assert [where for _, (where, _) in zip(range(2), shards[2].stream_rows())] == \
        ["sample '000000006'"]
    assert shards[0].line_number(2) == "sample '000000002'"


def test_a_tar_subset_trains_on_its_images_as_bytes(tmp_path):
    captioned_images(tmp_path / "src", 6)
    write_shards(str(tmp_path / "src" / "train.jsonl"), str(tmp_path / "data"), "train",
                 ["image"], samples_per_shard=4)
    task = instruction_task(tmp_path / "data", CAPTIONS, image_size=16, vit_patch_size=8,
                            image_adaptor="vit")
    task.load_dataset("train")
    dataset = task.datasets["train"]
    assert len(dataset) == 6 and dataset.streamable
    pixels = dataset[5].features[0].values  # decoded from the tar's PNG
    assert pixels.shape == (3, 16, 16)
    assert pixels[:, 8, 8].tolist() == [100, 90, 200]  # row 5's colour


def write_tar(path, members):
    """A tar of (name, bytes) members, in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def sample(key: str, fields: dict):
    return [(f"{key}.json", json.dumps(fields).encode())]


def test_bad_samples_are_named_by_shard_key_and_column(tmp_path):
    good = [{"src": s, "tgt": "t"} for s in sentences(4, seed=12)]
    write_tar(tmp_path / "train-00000.tar",
              [m for i, row in enumerate(good) for m in sample(f"a{i}", row)])
    write_tar(tmp_path / "train-00001.tar",
              sample("b0", good[0]) + [("b1.json", b"{not json")] + sample("b2", {"src": "x"})
              + sample("b3", good[1]) + [("b3.tgt.txt", b"twice")])
    task = instruction_task(tmp_path, "[TEXT:src] -> [TEXT:tgt]", skip_invalid_rows=True)
    task.prepare()
    task.cfg.skip_invalid_rows = False
    tables = task.open_subset(str(tmp_path), "train")
    with pytest.raises(InvalidRows) as info:
        task.dataset_for(tables, task.bind_plan(tables), with_target=True, train=True)
    message = str(info.value)
    shard = f"{tmp_path}/train-00001.tar"
    assert "3 invalid rows" in message
    assert f"{shard}, sample 'b1': its .json file is not valid JSON" in message
    assert f"{shard}, sample 'b2', column 'tgt': missing column 'tgt'" in message
    assert f"{shard}, sample 'b3': column 'tgt' comes from two of the sample's files" in message


def test_unreadable_tars_and_clashing_files_are_refused(tmp_path):
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match="broken.tar: not a readable tar file"):
        TarShard(str(tmp_path / "broken.tar"))
    write_tar(tmp_path / "twice.tar", sample("k", {"a": 1}) + [("k.txt", b"x"), ("k.TXT", b"y")])
    with pytest.raises(DataError, match=r"twice.tar, sample 'k': two files for field 'txt'"):
        TarShard(str(tmp_path / "twice.tar"))


def test_a_subset_is_files_or_tar_shards_not_both(tmp_path):
    write_jsonl(tmp_path / "train-00000.jsonl", [{"src": "a", "tgt": "b"}])
    write_tar(tmp_path / "train-00001.tar", sample("k", {"src": "a", "tgt": "b"}))
    task = instruction_task(tmp_path, "[TEXT:src] -> [TEXT:tgt]")
    with pytest.raises(DataError, match=r"different types \(.jsonl, .tar\)"):
        task.open_subset(str(tmp_path), "train")
    assert isinstance(task.open_subset(str(tmp_path), "train-00000")[0], Table)


def test_samples_are_grouped_as_webdataset_streams_them(tmp_path):
    write_tar(tmp_path / "s.tar", [("__meta__", b"skipped"), ("__info__/x.json", b"{}")]
              + sample("a", {"n": 1}) + [("__x.txt", b"kept"), ("b.json", b'{"n": 2}'),
                                         ("noextension", b"skipped"), ("b.caption.txt", b"hi")])
    shard = TarShard(str(tmp_path / "s.tar"))
    assert [shard.key(i) for i in range(len(shard))] == ["a", "__x", "b"]
    assert [row for _, row in shard.stream_rows()] == [shard[i] for i in range(3)] == \
        [{"n": 1}, {"txt": "kept"}, {"n": 2, "caption": "hi"}]
