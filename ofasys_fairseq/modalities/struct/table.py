"""Reading a STRUCT cell into rows of cell texts, and writing rows back as text.

A cell holds a table as a JSON list of rows, a JSON object of columns, a path to a
``.csv`` / ``.tsv`` file, or text already linearized. The text form is the original
system's: cells joined by `` : ``, rows by `` | ``.
"""
import csv
import json
import os
import re
from functools import lru_cache
from typing import Any, List, Optional, Sequence, Tuple

CELL_SEPARATOR, ROW_SEPARATOR = " : ", " | "
TABLE_FILES = (".csv", ".tsv")

Rows = List[List[str]]
_LONE_COLON = re.compile(r"(?:^|(?<=\s)):(?=\s|$)")
_LONE_BAR = re.compile(r"(?:^|(?<=\s))\|(?=\s|$)")


def cell_text(value: Any) -> str:
    """A scalar cell as text (whitespace collapsed; null is empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return " ".join(str(value).split())
    raise ValueError(f"expected a cell value (text or a number), found {type(value).__name__}")


def linearize(rows: Sequence[Sequence[str]]) -> str:
    """``[["a", "b"], ["c", "d"]]`` -> ``"a : b | c : d"``."""
    return ROW_SEPARATOR.join(CELL_SEPARATOR.join(row) for row in rows)


def parse_linearized(text: str) -> Rows:
    """The inverse of ``linearize``: a ``:`` or ``|`` standing alone between spaces
    separates (``10:30`` stays one cell; a cell holding `` : `` cannot survive)."""
    if not text.strip():
        return []
    return [[" ".join(cell.split()) for cell in _LONE_COLON.split(row)]
            for row in _LONE_BAR.split(text)]


def read_table(cell: Any, base_dir: str) -> Rows:
    """The rows of a STRUCT cell, every row as long as the first.

    Args:
        cell: a list of rows, an object of columns, a ``.csv``/``.tsv`` path (relative
            to ``base_dir``), JSON text of either (text starting with ``[`` or ``{``), or
            linearized text.
        base_dir: where relative file paths are resolved.
    """
    if isinstance(cell, str):
        stripped = cell.strip()
        if not stripped:
            raise ValueError("expected a table, found an empty cell")
        if stripped.lower().endswith(TABLE_FILES) and "\n" not in stripped:
            return _read_file(os.path.join(base_dir, stripped))
        if stripped[:1] in "[{":
            try:
                cell = json.loads(stripped)
            except ValueError as error:
                raise ValueError(f"malformed JSON table: {error}") from None
        else:
            return _checked(parse_linearized(stripped), "row")
    if isinstance(cell, dict):
        return _from_columns(cell)
    if isinstance(cell, list):
        if not all(isinstance(row, list) for row in cell):
            raise ValueError("expected a table as a list of rows (each a list of cells), "
                             "found a list with a non-list item")
        return _checked([[cell_text(v) for v in row] for row in cell], "row")
    raise ValueError(f"expected a table (a list of rows, an object of columns, a .csv/.tsv "
                     f"path or linearized text), found {type(cell).__name__}")


def _from_columns(columns: dict) -> Rows:
    lengths = {name: len(values) if isinstance(values, list) else None
               for name, values in columns.items()}
    bad = [name for name, length in lengths.items() if length is None]
    if bad:
        raise ValueError(f"expected each column as a list of values; column {bad[0]!r} is not")
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        other = next(n for n, length in lengths.items() if length != lengths[first])
        raise ValueError(f"ragged columns: {first!r} has {lengths[first]} values, {other!r} "
                         f"has {lengths[other]}")
    header = [cell_text(name) for name in columns]
    body = [[cell_text(v) for v in values] for values in zip(*columns.values())]
    return _checked([header] + body, "row")


def _checked(rows: Rows, unit: str, numbers: Optional[Sequence[int]] = None) -> Rows:
    """``rows`` if every one has as many cells as the first (and some); ``numbers``: how
    errors name each row (default: its position from 1)."""
    numbers = numbers or range(1, len(rows) + 1)
    for number, row in zip(numbers, rows):
        if not row:
            raise ValueError(f"{unit} {number} has no cells")
        if len(row) != len(rows[0]):
            raise ValueError(f"ragged rows: {unit} {number} has {len(row)} cells, "
                             f"{unit} {numbers[0]} has {len(rows[0])}")
    return rows


def _read_file(path: str) -> Rows:
    if not os.path.isfile(path):
        raise ValueError(f"no such table file: {path}")
    stat = os.stat(path)
    return [list(row) for row in _read_file_cached(path, stat.st_mtime_ns, stat.st_size)]


@lru_cache(maxsize=64)  # one table is often read by many rows (table QA)
def _read_file_cached(path: str, mtime_ns: int, size: int) -> Tuple[Tuple[str, ...], ...]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    rows, lines = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for record in reader:
            if record:  # blank lines hold no row
                rows.append([cell_text(v) for v in record])
                lines.append(reader.line_num)  # the record's last physical line
    try:
        _checked(rows, "line", lines)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return tuple(tuple(row) for row in rows)
