"""Random access to the rows of a data file (``.jsonl``, ``.tsv`` or ``.csv``).

One pass at open time records the byte offset of every row (optionally cached:
``index_cache.py``); ``table[i]`` then seeks and parses only row ``i``. This keeps memory
flat for large files and lets fairseq's batching, shuffling and sharding pick rows in any
order. File handles are opened lazily so a table can be pickled into DataLoader workers.
"""
import csv
import glob
import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from .index_cache import cached_index

TABLE_EXTENSIONS = (".jsonl", ".tsv", ".csv")
SPLIT_EXTENSIONS = TABLE_EXTENSIONS + (".tar",)  # a subset's files: tables or tar shards
T = TypeVar("T")


class DataError(ValueError):
    """Bad input data, located by file, line and column."""

    def __init__(self, message: str, path: str, line: Union[int, str, None] = None,
                 column: Optional[str] = None):
        """``line``: a line number, or where a row is in a file without lines (a tar
        shard's ``sample 'KEY'``)."""
        self.path, self.line, self.column, self.reason = path, line, column, message
        where = path
        if line is not None:
            where += f", {line}" if isinstance(line, str) else f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # rebuilt from its parts in another process (a scan worker)
        return type(self), (self.reason, self.path, self.line, self.column)


def required_cell(row: Dict[str, object], slot, path: str, line: Optional[int]) -> object:
    """The value of ``slot.column`` in ``row``; a located error naming the row's columns
    if it is missing."""
    if slot.column not in row:
        raise DataError(f"missing column '{slot.column}' needed by {slot}; this row has: "
                        f"{', '.join(map(str, row.keys())) or 'no columns'}", path, line,
                        slot.column)
    return row[slot.column]


def located(read: Callable[[], T], path: str, line: Optional[int], column: Optional[str]) -> T:
    """``read()``, a ValueError from it becoming a DataError at ``path``, ``line``,
    ``column`` (a DataError passes unchanged)."""
    try:
        return read()
    except ValueError as error:
        if isinstance(error, DataError):
            raise
        raise DataError(str(error), path, line, column) from None


class InvalidRows(DataError):
    """Every bad row of one file, reported at once.

    Args:
        errors: one ``DataError`` per bad row, in file order.
    """

    SHOWN = 20

    def __init__(self, errors: Sequence[DataError], path: str):
        self.errors = list(errors)
        shown = [str(e) for e in self.errors[:self.SHOWN]]
        if len(self.errors) > self.SHOWN:
            shown.append(f"... and {len(self.errors) - self.SHOWN} more (ofasys-validate "
                         f"lists them all)")
        super().__init__(f"{len(self.errors)} invalid rows:\n  " + "\n  ".join(shown), path)

    def __reduce__(self):
        return type(self), (self.errors, self.path)


class SeekableFile:
    """``self.path`` opened for seeking, once per process: a forked DataLoader worker
    inherits the parent's open file, and with it one file offset shared by every process
    (seeks would race). Pickled without it."""

    _file, _file_pid = None, None

    def _open(self):
        if self._file is None or self._file_pid != os.getpid():
            self._file, self._file_pid = open(self.path, "rb"), os.getpid()
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_file_pid"] = None, None
        return state


class Table(SeekableFile):
    """Rows of one data file as dicts, addressable by index.

    Args:
        path: a ``.jsonl`` file (one JSON object per line) or a ``.tsv`` / ``.csv``
            file whose first line is a header.
        cached: keep the row index in the index cache (built once, memory-mapped after).
        cache_dir: where the index cache lives (default: beside the file).
    """

    def __init__(self, path: str, cached: bool = False, cache_dir: Optional[str] = None):
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))  # relative image paths
        self.format = os.path.splitext(path)[1].lower()
        if self.format not in TABLE_EXTENSIONS:
            raise DataError(f"unsupported file type, expected one of {TABLE_EXTENSIONS}", path)
        self.header: Optional[List[str]] = None
        if cached:
            # nothing but the file (its path, size and time) decides the rows
            arrays, info, _ = cached_index(path, "rows", "", self._index, cache_dir)
        else:
            arrays, info = self._index()
        self._offsets = arrays["offsets"]  # byte offset where each row starts
        self._lines = arrays["lines"]  # its 1-based line number
        self.header = info["header"]

    # -- indexing ------------------------------------------------------------
    def _index(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        with open(self.path, "rb") as f:
            offsets, lines = self._index_csv(f) if self.format == ".csv" else self._index_lines(f)
        return ({"offsets": np.array(offsets, dtype=np.int64),
                 "lines": np.array(lines, dtype=np.int32)}, {"header": self.header})

    def _index_lines(self, f) -> Tuple[List[int], List[int]]:
        offset, offsets, lines = 0, [], []
        for number, raw in enumerate(f, start=1):
            if self.format == ".tsv" and self.header is None:
                text = _decode(raw, self.path, number, "utf-8-sig")  # Excel writes a BOM
                self.header = _check_header(text.rstrip("\r\n").split("\t"), self.path)
            elif raw.strip(b"\r\n" if self.format == ".tsv" else None):
                # empty lines hold no row; a tsv line of tabs is a row of empty fields
                offsets.append(offset)
                lines.append(number)
            offset += len(raw)
        if self.format == ".tsv" and self.header is None:
            raise DataError("empty file, expected a header line naming the columns", self.path)
        return offsets, lines

    def _index_csv(self, f) -> Tuple[List[int], List[int]]:
        # csv records may span several physical lines (quoted newlines): feed the
        # reader line by line and note where each record's first line started.
        starts: List[tuple] = []
        position = {"offset": 0, "line": 0}

        def lines() -> Iterator[str]:
            for raw in f:
                starts.append((position["offset"], position["line"] + 1))
                position["offset"] += len(raw)
                position["line"] += 1
                yield _decode(raw, self.path, position["line"],
                              "utf-8-sig" if position["line"] == 1 else "utf-8")

        reader = csv.reader(lines())
        consumed, offsets, numbers = 0, [], []
        for record in reader:
            first = starts[consumed]
            consumed = len(starts)
            if self.header is None:
                self.header = _check_header(record, self.path)
            elif record:
                offsets.append(first[0])
                numbers.append(first[1])
        if self.header is None:
            raise DataError("empty file, expected a header line naming the columns", self.path)
        return offsets, numbers

    # -- access --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offsets)

    def line_number(self, index: int) -> int:
        return int(self._lines[index])

    @property
    def columns(self) -> Sequence[str]:
        """Column names: the header, or the keys of the first row for jsonl."""
        if self.header is not None:
            return self.header
        return list(self[0].keys()) if len(self) else []

    def __getitem__(self, index: int) -> Dict[str, object]:
        f = self._open()
        f.seek(int(self._offsets[index]))
        if self.format == ".jsonl":
            return self._parse_json(f.readline(), index)
        if self.format == ".tsv":
            values = _decode(f.readline(), self.path,
                             self.line_number(index)).rstrip("\r\n").split("\t")
        else:
            values = next(csv.reader(_decoded_lines(f)))
        if len(values) != len(self.header):
            raise DataError(f"expected {len(self.header)} fields ({', '.join(self.header)}), "
                            f"found {len(values)}", self.path, self.line_number(index))
        return dict(zip(self.header, values))

    def _parse_json(self, raw: bytes, index: int) -> Dict[str, object]:
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg} at character {e.pos})", self.path,
                            self.line_number(index)) from None
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 (byte {e.start + 1} of the line)", self.path,
                            self.line_number(index)) from None
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, found {type(row).__name__}", self.path,
                            self.line_number(index))
        return row


def _decode(raw: bytes, path: str, line: int, encoding: str = "utf-8") -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path,
                        line) from None


def _decoded_lines(f) -> Iterator[str]:
    for raw in f:
        yield raw.decode("utf-8")


def _check_header(names: List[str], path: str) -> List[str]:
    stripped = [n.strip() for n in names]
    for position, name in enumerate(stripped, start=1):
        if not name:
            raise DataError(f"header field {position} is empty", path, 1)
    duplicates = sorted({n for n in stripped if stripped.count(n) > 1})
    if duplicates:
        raise DataError(f"duplicate column names in header: {', '.join(duplicates)}", path, 1)
    return stripped


class InMemoryTable:
    """Rows given directly (for ``OFASys.inference``), with the Table interface."""

    def __init__(self, rows: Sequence[Dict[str, object]], path: str = "<data>",
                 base_dir: Optional[str] = None):
        self.path = path
        self.base_dir = base_dir or os.getcwd()
        self.rows = list(rows)
        for index, row in enumerate(self.rows):
            if not isinstance(row, dict):
                raise DataError(f"expected a dict of column -> value, found "
                                f"{type(row).__name__}", path, index + 1)

    def __len__(self) -> int:
        return len(self.rows)

    def line_number(self, index: int) -> int:
        return index + 1

    @property
    def columns(self) -> Sequence[str]:
        return list(self.rows[0].keys()) if self.rows else []

    def __getitem__(self, index: int) -> Dict[str, object]:
        return self.rows[index]


def as_tables(rows) -> List[Any]:
    """``rows`` (a ``Table``, ``TarShard`` or ``InMemoryTable``, or a list of them: a
    subset's shards) as a list of tables."""
    return list(rows) if isinstance(rows, (list, tuple)) else [rows]


def open_table(path: str, cached: bool = False, cache_dir: Optional[str] = None):
    """The rows of a data file: a ``Table``, or a ``TarShard`` for a ``.tar`` file."""
    if path.endswith(".tar"):
        from .tar_shard import TarShard  # it raises this module's DataError
        return TarShard(path, cached, cache_dir)
    return Table(path, cached, cache_dir)


def find_split_files(data_dir: str, subset: str) -> List[str]:
    """The data files of ``subset`` in ``data_dir``, in name order: ``<subset>.{jsonl,tsv,csv,tar}``,
    or its numbered shards ``<subset>-<digits>...`` (``train-00000-of-00004.jsonl``), or the
    files a glob ``subset`` matches (``train-0000[0-3]``). One extension; clear errors
    when nothing matches, or when a file and shards of the same subset both exist."""
    def matching(pattern: str) -> List[str]:
        return sorted(p for ext in SPLIT_EXTENSIONS
                      for p in glob.glob(os.path.join(glob.escape(data_dir), pattern + ext)))

    if glob.has_magic(subset):
        found = matching(subset)
    else:
        found = matching(glob.escape(subset))
        shards = matching(glob.escape(subset) + "-[0-9]*")
        if found and shards:
            raise DataError(f"subset '{subset}' is both {_names(found)} and the shards "
                            f"{_names(shards)}: keep one, or rename the other subset", data_dir)
        found = found or shards
    if not found:
        existing = sorted(f for f in os.listdir(data_dir) if f.endswith(SPLIT_EXTENSIONS)) \
            if os.path.isdir(data_dir) else []
        raise DataError(f"no data file for subset '{subset}': expected {subset}.jsonl, "
                        f"{subset}.tsv or {subset}.csv (or shards {subset}-00000.jsonl, ..., or "
                        f"WebDataset shards {subset}-00000.tar, ...); "
                        f"found {existing or 'no data files'}", data_dir)
    extensions = sorted({os.path.splitext(p)[1] for p in found})
    if len(extensions) > 1:
        raise DataError(f"several data files for subset '{subset}' of different types "
                        f"({', '.join(extensions)}): {_names(found)}; keep one type", data_dir)
    return found


def split_name(paths: Sequence[str]) -> str:
    """How logs, errors and corpus metrics name the rows of ``paths``: the file, or the
    first and last shard and their count."""
    if len(paths) == 1:
        return paths[0]
    return f"{paths[0]} .. {os.path.basename(paths[-1])} ({len(paths)} files)"


def _names(paths: Sequence[str]) -> str:
    return ", ".join(os.path.basename(p) for p in paths)
