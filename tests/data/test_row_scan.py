"""A data file's scan spread over forked processes (``--scan-workers``) finds what one
process finds: the same rows, sizes, references, bad rows (located, in file order) and
the modalities' notes. Chunks are made small here so that 80 rows span eight of them."""
import logging

import numpy as np
import pytest

from ofasys_fairseq.data import row_scan
from ofasys_fairseq.data.table import InvalidRows
from tests.helpers import instruction_task, sentences, write_jsonl

# a STRUCT slot cut to one table row notes every example it cuts
INSTRUCTION = "[TEXT:src] [STRUCT:table,max_rows=1] -> [TEXT:tgt]"
BAD_LINES = [1, 10, 11, 40, 80]  # chunk edges and the last line


def rows():
    texts = sentences(80, seed=3)
    table = [["a", "b"], ["1", "2"], ["3", "4"]]
    return [{"src": text, "table": table} if i + 1 in BAD_LINES else
            {"src": text, "table": table, "tgt": " ".join(text.split()[:3])}
            for i, text in enumerate(texts)]


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(row_scan, "CHUNK_ROWS", 10)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    write_jsonl(root / "train.jsonl", [row for row in rows() if "tgt" in row])
    write_jsonl(root / "valid.jsonl", rows())
    return root


def loaded(data_dir, split, workers, **overrides):
    task = instruction_task(data_dir, INSTRUCTION, scan_workers=workers, no_data_cache=True,
                            **overrides)
    task.load_dataset(split)
    return task.datasets[split]


def test_two_processes_find_what_one_finds(data_dir, small_chunks, caplog):
    caplog.set_level(logging.INFO)
    scans = {}
    for workers in (1, 2):
        caplog.clear()
        dataset = loaded(data_dir, "valid", workers, skip_invalid_rows=True)
        notes = [r.getMessage() for r in caplog.records if "rows cut" in r.getMessage()]
        scans[workers] = (dataset, notes)
    (one, one_notes), (two, two_notes) = scans[1], scans[2]
    assert len(one) == 80 - len(BAD_LINES)
    for name in ("rows", "src_sizes", "tgt_sizes", "feature_sizes"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    assert one.references == two.references and len(two.references) == len(two)
    assert [e.line for e in two.invalid_rows] == BAD_LINES  # file order across chunks
    assert [str(e) for e in two.invalid_rows] == [str(e) for e in one.invalid_rows]
    assert all("column 'tgt'" in str(e) for e in two.invalid_rows)
    assert one_notes == two_notes and ": 160 rows cut" in two_notes[0]  # 2 of each table


def test_every_bad_row_is_reported_from_the_workers(data_dir, small_chunks):
    with pytest.raises(InvalidRows) as info:
        loaded(data_dir, "valid", workers=2)
    assert [e.line for e in info.value.errors] == BAD_LINES
    assert f"{len(BAD_LINES)} invalid rows" in str(info.value)
    assert "valid.jsonl, line 10, column 'tgt': missing column 'tgt'" in str(info.value)


def test_worker_counts():
    assert row_scan.scan_workers(3) == 3
    assert 1 <= row_scan.scan_workers(0) <= row_scan.MAX_AUTO_WORKERS
    with pytest.raises(ValueError, match="--scan-workers must be 0"):
        row_scan.scan_workers(-1)


def test_a_long_scan_logs_its_progress(data_dir, small_chunks, monkeypatch, caplog):
    monkeypatch.setattr(row_scan, "PROGRESS_SECONDS", 0.0)  # a line after every chunk
    caplog.set_level(logging.INFO)
    loaded(data_dir, "valid", workers=2, skip_invalid_rows=True)
    progress = [r.getMessage() for r in caplog.records if "scanned" in r.getMessage()]
    assert len(progress) == 8 and "valid.jsonl: scanned 10 of 80 rows" in progress[0]
    assert progress[-1].startswith(f"{data_dir / 'valid.jsonl'}: scanned 80 of 80 rows (")
    assert progress[-1].endswith("s, 2 processes)")
