"""The index cache: a data file's row index and its examples' sizes, built once and
memory-mapped on later starts; stale or corrupt entries are rebuilt, never trusted."""
import json
import logging
import multiprocessing
import os

import numpy as np
import pytest

from ofasys_fairseq.data.index_cache import cached_index, fingerprint
from ofasys_fairseq.data.instruction_dataset import InstructionDataset
from ofasys_fairseq.data.table import DataError, InvalidRows, Table
from tests.helpers import instruction_task, sentences, write_jsonl

INSTRUCTION = "[TEXT:src] what is the summary? -> [TEXT:tgt]"


def squares(count: int):
    return {"squares": np.arange(count, dtype=np.int64) ** 2}, {"count": count}


def test_built_once_then_mapped(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    first = cached_index(str(data), "squares", "k", lambda: squares(5))
    assert first.built and first.info == {"count": 5}
    second = cached_index(str(data), "squares", "k", lambda: pytest.fail("rebuilt"))
    assert not second.built and second.info == {"count": 5}
    assert isinstance(second.arrays["squares"], np.memmap)
    assert second.arrays["squares"].tolist() == [0, 1, 4, 9, 16]
    assert os.path.isdir(tmp_path / ".ofasys-cache" / "train.jsonl.squares")  # beside the file


@pytest.mark.parametrize("change", ["file", "key"])
def test_a_stale_entry_is_rebuilt(tmp_path, change, caplog):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    cached_index(str(data), "squares", "k", lambda: squares(3))
    key = "k"
    if change == "file":
        with open(data, "a") as f:
            f.write('{"a": 2}\n')
    else:
        key = "another plan"
    with caplog.at_level(logging.INFO):
        again = cached_index(str(data), "squares", key, lambda: squares(4))
    assert again.built and again.arrays["squares"].tolist() == [0, 1, 4, 9]
    assert f"is stale (its {change} changed): rebuilding it" in caplog.text


@pytest.mark.parametrize("damage", ["array bytes", "meta", "missing array"])
def test_a_corrupt_entry_is_reported_and_rebuilt(tmp_path, damage, caplog):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    cached_index(str(data), "squares", "k", lambda: squares(6))
    entry = tmp_path / ".ofasys-cache" / "train.jsonl.squares"
    if damage == "array bytes":
        raw = bytearray((entry / "squares.npy").read_bytes())
        raw[-1] ^= 0xFF  # the last square, 25, becomes another number
        (entry / "squares.npy").write_bytes(bytes(raw))
    elif damage == "meta":
        (entry / "meta.json").write_text('{"format": 1, "file"')
    else:
        (entry / "squares.npy").unlink()
    again = cached_index(str(data), "squares", "k", lambda: squares(6))
    assert again.built and again.arrays["squares"].tolist() == [0, 1, 4, 9, 16, 25]
    assert "is corrupt" in caplog.text and "rebuilding it" in caplog.text


def test_a_cache_directory_elsewhere_names_entries_by_file_and_location(tmp_path):
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text('{"a": 1}\n')
    cached_index(str(data), "squares", "k", lambda: squares(2), cache_dir=str(tmp_path / "c"))
    assert not (data.parent / ".ofasys-cache").exists()
    [entry] = [e for e in os.listdir(tmp_path / "c") if not e.endswith(".lock")]
    assert entry.startswith("train.jsonl.") and entry.endswith(".squares")


def build_counting(data, record):
    def build():
        with open(record, "a") as f:
            f.write("built\n")
        return squares(1000)
    return cached_index(data, "squares", "k", build).arrays["squares"][-1]


def test_processes_starting_together_build_once(tmp_path):
    data, record = tmp_path / "train.jsonl", tmp_path / "builds"
    data.write_text('{"a": 1}\n')
    with multiprocessing.get_context("fork").Pool(3) as pool:
        lasts = pool.starmap(build_counting, [(str(data), str(record))] * 3)
    assert lasts == [999 ** 2] * 3
    assert record.read_text() == "built\n"


def test_fingerprint_tells_values_apart():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint(np.array([1, 2])) != fingerprint(np.array([1, 3]))
    assert fingerprint("1") != fingerprint(1) and fingerprint(["ab"]) != fingerprint(["a", "b"])


# --- tables and datasets -------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("rows.jsonl", '{"a": "x"}\n\n{"a": "y"}\n'),
    ("rows.tsv", "a\tb\nx\t1\n\ny\t2\n"),
    ("rows.csv", 'a,b\n"x\nz",1\ny,2\n'),
])
def test_a_cached_table_reads_as_an_uncached_one(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    plain = Table(str(path))
    for _ in range(2):  # built, then mapped
        cached = Table(str(path), cached=True)
        assert cached.header == plain.header and len(cached) == len(plain) == 2
        assert [cached[i] for i in range(2)] == [plain[i] for i in range(2)]
        assert [cached.line_number(i) for i in range(2)] == [plain.line_number(i) for i in range(2)]


class CountingTable(Table):
    """A Table that counts the rows it parses."""

    parsed = 0

    def __getitem__(self, index):
        CountingTable.parsed += 1
        return super().__getitem__(index)


@pytest.fixture
def task(tmp_path):
    src, tgt = sentences(60, seed=1), sentences(60, seed=2, max_words=4)
    write_jsonl(tmp_path / "train.jsonl", [{"src": s, "tgt": t} for s, t in zip(src, tgt)])
    task = instruction_task(tmp_path, INSTRUCTION)
    task.prepare()
    return task


def open_dataset(task, cached=True, instruction=INSTRUCTION, **options):
    table = CountingTable(os.path.join(task.cfg.data, "train.jsonl"), cached=cached)
    plan = task.plan.__class__.parse(instruction).bind_columns(table.columns)
    CountingTable.parsed = 0
    dataset = InstructionDataset(table, plan, task.vocab, task.modality_settings, train=True,
                                 cached=cached, **options)
    return dataset, CountingTable.parsed


def test_a_dataset_scans_once_and_maps_its_sizes_after(task):
    plain, parsed = open_dataset(task, cached=False)
    assert parsed == 60
    built, parsed = open_dataset(task)
    assert parsed == 60
    mapped, parsed = open_dataset(task)
    assert parsed == 0  # nothing read: the sizes come from the cache
    for dataset in (built, mapped):
        for name in ("rows", "src_sizes", "tgt_sizes", "feature_sizes"):
            assert np.array_equal(getattr(dataset, name), getattr(plain, name)), name
        assert [dataset.num_tokens(i) for i in range(60)] == [plain.num_tokens(i)
                                                              for i in range(60)]
    assert isinstance(mapped.src_sizes, np.memmap)
    assert dataset[7].source == plain[7].source


def test_another_instruction_or_vocabulary_scans_again(task, tmp_path):
    open_dataset(task)
    _, parsed = open_dataset(task, instruction="[TEXT:src] summarize it please -> [TEXT:tgt]")
    assert parsed == 60
    other = instruction_task(tmp_path, INSTRUCTION, vocab_size=60)
    other.prepare()
    _, parsed = open_dataset(other)
    assert parsed == 60


def test_validation_sets_are_scanned_for_their_references(task):
    table = Table(os.path.join(task.cfg.data, "train.jsonl"), cached=True)
    dataset = InstructionDataset(table, task.plan.bind_columns(table.columns), task.vocab,
                                 task.modality_settings, train=False, cached=True)
    assert len(dataset.references) == 60
    assert not [e for e in os.listdir(os.path.join(task.cfg.data, ".ofasys-cache"))
                if ".examples." in e]


def test_bad_rows_fail_every_start_and_skipped_ones_are_reported_every_start(task, caplog):
    path = os.path.join(task.cfg.data, "train.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"src": "no target here"}) + "\n")
        f.write(json.dumps({"tgt": "no source here"}) + "\n")
    for _ in range(2):  # nothing cached from a failed scan
        with pytest.raises(InvalidRows, match="2 invalid rows"):
            open_dataset(task)
    for parsed_expected in (62, 0):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            dataset, parsed = open_dataset(task, skip_invalid_rows=True)
        assert parsed == parsed_expected and len(dataset) == 60
        assert "skipped 2 invalid rows" in caplog.text
        assert "line 61, column 'tgt'" in caplog.text


def test_no_usable_rows_is_an_error_not_a_cache(task):
    with open(os.path.join(task.cfg.data, "train.jsonl"), "w") as f:
        f.write(json.dumps({"src": "only a source"}) + "\n")
    for _ in range(2):
        with pytest.raises(DataError):
            open_dataset(task, skip_invalid_rows=True)
