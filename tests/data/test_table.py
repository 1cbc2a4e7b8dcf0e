"""Table: random access to jsonl / tsv / csv rows, located errors, split files."""
import csv
import json
import os
import pickle
import random

import pytest
import torch

from ofasys_fairseq.data.table import (DataError, InMemoryTable, Table, find_split_files,
                                       split_name)

ROWS = [{"src": f"source number {i}", "tgt": f"target {i * 3}"} for i in range(25)]


def shuffled_indices(n: int, seed: int = 0):
    order = list(range(n)) * 2  # every row twice, in a random (non-sequential) order
    random.Random(seed).shuffle(order)
    return order


def write_bytes(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# --- reading rows by index -----------------------------------------------------------


def test_jsonl_random_access_with_blank_lines(tmp_path):
    lines, expected_line_numbers = [], []
    for i, row in enumerate(ROWS):
        if i % 4 == 1:
            lines.append("")  # blank lines hold no row but count for line numbers
        if i % 7 == 3:
            lines.append("   ")
        lines.append(json.dumps(row))
        expected_line_numbers.append(len(lines))
    path = write_bytes(tmp_path / "train.jsonl", ("\n".join(lines) + "\n").encode())

    table = Table(path)
    assert len(table) == len(ROWS)
    assert table.header is None
    assert list(table.columns) == ["src", "tgt"]  # the keys of the first row
    for index in shuffled_indices(len(ROWS)):
        assert table[index] == ROWS[index]
        assert table.line_number(index) == expected_line_numbers[index]
    assert table[-1] == ROWS[-1]
    with pytest.raises(IndexError):
        table[len(ROWS)]


def test_jsonl_keeps_json_types_and_unicode(tmp_path):
    rows = [{"src": "café ☕ naïve", "n": 3, "x": 1.5, "ok": True},
            {"src": "日本語のテキスト", "n": -1, "x": 0.0, "ok": False}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    table = Table(str(path))  # no final newline
    assert [table[1], table[0]] == [rows[1], rows[0]]


def test_tsv_header_and_random_access(tmp_path):
    # header names are stripped; values are kept as written; CRLF line ends are dropped
    text = " src \t tgt\r\n" + "".join(f"{r['src']}\t{r['tgt']}\r\n" for r in ROWS[:10])
    text += "\r\n"  # trailing blank line: no row
    path = write_bytes(tmp_path / "valid.tsv", text.encode())
    table = Table(path)
    assert table.header == ["src", "tgt"]
    assert list(table.columns) == ["src", "tgt"]
    assert len(table) == 10
    for index in shuffled_indices(10, seed=1):
        assert table[index] == ROWS[index]
        assert table.line_number(index) == index + 2  # line 1 is the header


def test_tsv_empty_fields_are_kept(tmp_path):
    path = write_bytes(tmp_path / "d.tsv", b"a\tb\tc\nx\t\tz\n\tq\t\n")
    table = Table(path)
    assert [table[0], table[1]] == [{"a": "x", "b": "", "c": "z"}, {"a": "", "b": "q", "c": ""}]


def test_csv_quoting_and_multiline_records(tmp_path):
    rows = [{"src": "plain", "tgt": "one"},
            {"src": "has, comma", "tgt": 'a "quoted" word'},
            {"src": "spans\ntwo lines", "tgt": "three"},
            {"src": "after the multi-line record", "tgt": "four"}]
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["src", "tgt"])
        writer.writeheader()
        writer.writerows(rows)
    table = Table(str(path))
    assert table.header == ["src", "tgt"]
    assert len(table) == len(rows)
    for index in [3, 1, 2, 0, 2, 3]:
        assert table[index] == rows[index]
    # header is line 1; record 2 takes lines 4-5, so record 3 starts on line 6
    assert [table.line_number(i) for i in range(4)] == [2, 3, 4, 6]


@pytest.mark.parametrize("ext,header", [(".csv", "src,tgt\n"), (".tsv", "src\ttgt\n")])
def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path, ext, header):
    sep = header[3]
    path = write_bytes(tmp_path / f"d{ext}",
                       b"\xef\xbb\xbf" + (header + f"hello{sep}world\n").encode())
    table = Table(path)
    assert list(table.columns) == ["src", "tgt"]
    assert table[0] == {"src": "hello", "tgt": "world"}


def test_jsonl_byte_order_mark(tmp_path):
    path = write_bytes(tmp_path / "d.jsonl", b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode())
    assert Table(path)[0] == ROWS[0]


def test_table_pickles_for_dataloader_workers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    table = Table(str(path))
    assert table[5] == ROWS[5]  # opens the file handle
    copy = pickle.loads(pickle.dumps(table))
    assert copy[7] == ROWS[7] and copy[5] == ROWS[5]
    assert len(copy) == len(table)


def test_in_memory_table():
    table = InMemoryTable([{"a": "x"}, {"a": "y", "b": "z"}])
    assert len(table) == 2 and table[1] == {"a": "y", "b": "z"}
    assert list(table.columns) == ["a"] and table.line_number(1) == 2
    with pytest.raises(DataError, match=r"<data>, line 2: expected a dict"):
        InMemoryTable([{"a": "x"}, ["not", "a", "dict"]])


# --- bad input: errors name the file, the line and (when it applies) the column ---------------


def assert_located(error: DataError, path: str, line):
    assert error.path == path and error.line == line
    assert str(error).startswith(f"{path}, line {line}: " if line is not None else f"{path}: ")


def test_malformed_json_line(tmp_path):
    text = json.dumps(ROWS[0]) + "\n\n" + '{"src": "unterminated\n' + json.dumps(ROWS[1]) + "\n"
    path = write_bytes(tmp_path / "train.jsonl", text.encode())
    table = Table(path)
    assert table[2] == ROWS[1]  # rows after the bad one are still reachable
    with pytest.raises(DataError, match="invalid JSON") as info:
        table[1]
    assert_located(info.value, path, 3)


def test_json_line_that_is_not_an_object(tmp_path):
    path = write_bytes(tmp_path / "d.jsonl", b'{"a": 1}\n["a", 1]\n')
    with pytest.raises(DataError, match="expected a JSON object, found list") as info:
        Table(path)[1]
    assert_located(info.value, path, 2)


def test_jsonl_columns_fail_on_a_bad_first_row(tmp_path):
    path = write_bytes(tmp_path / "d.jsonl", b"not json\n")
    with pytest.raises(DataError) as info:
        Table(path).columns
    assert_located(info.value, path, 1)


@pytest.mark.parametrize("line,found", [("only-one-field", 1), ("a\tb\tc", 3)])
def test_tsv_wrong_number_of_fields(tmp_path, line, found):
    path = write_bytes(tmp_path / "d.tsv", f"src\ttgt\nx\ty\n{line}\n".encode())
    table = Table(path)
    assert table[0] == {"src": "x", "tgt": "y"}
    with pytest.raises(DataError, match=rf"expected 2 fields \(src, tgt\), found {found}") as info:
        table[1]
    assert_located(info.value, path, 3)


def test_csv_row_missing_a_column(tmp_path):
    path = write_bytes(tmp_path / "d.csv", b"src,tgt,label\nx,y,z\n\nonly,two\n")
    table = Table(path)
    with pytest.raises(DataError, match=r"expected 3 fields \(src, tgt, label\), found 2") as info:
        table[1]
    assert_located(info.value, path, 4)


@pytest.mark.parametrize("ext", [".jsonl", ".tsv", ".csv"])
def test_invalid_utf8_is_located(tmp_path, ext):
    sep = "\t" if ext == ".tsv" else ","
    good = json.dumps({"src": "ok"}).encode() if ext == ".jsonl" else f"ok{sep}fine".encode()
    bad = b'{"src": "caf\xe9"}' if ext == ".jsonl" else b"caf\xe9" + f"{sep}x".encode()
    header = b"" if ext == ".jsonl" else f"src{sep}tgt\n".encode()
    path = write_bytes(tmp_path / f"latin1{ext}", header + good + b"\n" + bad + b"\n")
    line = 2 if ext == ".jsonl" else 3
    with pytest.raises(DataError, match="not valid UTF-8") as info:
        table = Table(path)  # csv decodes while indexing (records may span lines)
        table[1]
    assert_located(info.value, path, line)


@pytest.mark.parametrize("name,content,reason", [
    ("d.tsv", b"", "empty file"),
    ("d.tsv", b"src\t\ttgt\nx\ty\tz\n", "header field 2 is empty"),
    ("d.tsv", b"src\ttgt\tsrc\nx\ty\tz\n", "duplicate column names in header: src"),
    ("d.csv", b"", "empty file"),
    ("d.csv", b"a,,b\n1,2,3\n", "header field 2 is empty"),
    ("d.csv", b"a,b,a\n1,2,3\n", "duplicate column names in header: a"),
])
def test_bad_header(tmp_path, name, content, reason):
    path = write_bytes(tmp_path / name, content)
    with pytest.raises(DataError, match=reason) as info:
        Table(path)
    assert info.value.path == path


def test_unsupported_extension(tmp_path):
    path = write_bytes(tmp_path / "train.txt", b"hello\n")
    with pytest.raises(DataError, match=r"unsupported file type.*\.jsonl") as info:
        Table(path)
    assert_located(info.value, path, None)


# --- choosing the file of a subset ---------------------------------------------------------


@pytest.mark.parametrize("ext", [".jsonl", ".tsv", ".csv"])
def test_find_split_files_picks_the_one_file(tmp_path, ext):
    write_bytes(tmp_path / f"train{ext}", b"")
    write_bytes(tmp_path / "valid.jsonl", b"")  # another subset: not a candidate
    write_bytes(tmp_path / "train.txt", b"")  # not a data file
    write_bytes(tmp_path / "train-small.jsonl", b"")  # another subset, not a shard
    assert find_split_files(str(tmp_path), "train") == [os.path.join(str(tmp_path),
                                                                     f"train{ext}")]


def test_find_split_files_numbered_shards_in_name_order(tmp_path):
    names = ["train-00002-of-00003.jsonl", "train-00000-of-00003.jsonl",
             "train-00001-of-00003.jsonl"]
    for name in names + ["train-small.jsonl", "valid-00000.jsonl"]:
        write_bytes(tmp_path / name, b"")
    assert find_split_files(str(tmp_path), "train") == [
        os.path.join(str(tmp_path), n) for n in sorted(names)]


def test_find_split_files_glob(tmp_path):
    for i in range(5):
        write_bytes(tmp_path / f"part-{i}.tsv", b"")
    found = find_split_files(str(tmp_path), "part-[1-3]")
    assert [os.path.basename(p) for p in found] == ["part-1.tsv", "part-2.tsv", "part-3.tsv"]


def test_find_split_files_file_and_shards_is_ambiguous(tmp_path):
    write_bytes(tmp_path / "train.jsonl", b"")
    write_bytes(tmp_path / "train-00000.jsonl", b"")
    with pytest.raises(DataError, match="subset 'train' is both train.jsonl and the shards "
                                        "train-00000.jsonl: keep one"):
        find_split_files(str(tmp_path), "train")


def test_find_split_files_missing_lists_what_exists(tmp_path):
    write_bytes(tmp_path / "valid.jsonl", b"")
    write_bytes(tmp_path / "dev.tsv", b"")
    with pytest.raises(DataError) as info:
        find_split_files(str(tmp_path), "train")
    message = str(info.value)
    assert info.value.path == str(tmp_path)
    assert "no data file for subset 'train'" in message
    assert "train.jsonl, train.tsv or train.csv (or shards train-00000.jsonl" in message
    assert "dev.tsv" in message and "valid.jsonl" in message


def test_find_split_files_missing_directory(tmp_path):
    with pytest.raises(DataError, match="found no data files"):
        find_split_files(str(tmp_path / "nowhere"), "train")


def test_find_split_files_mixed_types(tmp_path):
    write_bytes(tmp_path / "train.jsonl", b"")
    write_bytes(tmp_path / "train.csv", b"")
    with pytest.raises(DataError, match="subset 'train' of different types "
                                        r"\(.csv, .jsonl\)") as info:
        find_split_files(str(tmp_path), "train")
    assert "train.jsonl" in str(info.value) and "train.csv" in str(info.value)


def test_split_name_names_one_file_or_the_shards():
    assert split_name(["d/train.jsonl"]) == "d/train.jsonl"
    assert split_name(["d/t-0.jsonl", "d/t-1.jsonl", "d/t-2.jsonl"]) == \
        "d/t-0.jsonl .. t-2.jsonl (3 files)"


class RowIds(torch.utils.data.Dataset):
    def __init__(self, table):
        self.table = table

    def __len__(self):
        return len(self.table)

    def __getitem__(self, index):
        return self.table[index]["i"]


def test_forked_dataloader_workers_read_the_right_rows(tmp_path):
    # the parent opens the file first (as the dataset scan does), then workers fork
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"i": i, "text": "w " * (i % 37)}) + "\n"
                            for i in range(300)), encoding="utf-8")
    table = Table(str(path))
    assert table[5]["i"] == 5
    order = [i for _ in range(4) for i in random.Random(0).sample(range(300), 300)]
    loader = torch.utils.data.DataLoader(RowIds(table), sampler=order, batch_size=None,
                                         num_workers=2, multiprocessing_context="fork")
    assert list(loader) == order


def test_a_tsv_line_of_tabs_is_a_row_of_empty_fields(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"src\ttgt\na\tb\n\t\n\nc\td\n")
    table = Table(str(path))
    assert [table[i] for i in range(len(table))] == [
        {"src": "a", "tgt": "b"}, {"src": "", "tgt": ""}, {"src": "c", "tgt": "d"}]
    assert [table.line_number(i) for i in range(len(table))] == [2, 3, 5]
