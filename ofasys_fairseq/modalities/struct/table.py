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
from typing import Any, List, Sequence, Tuple

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
            to ``base_dir``), JSON text of either, or linearized text.
        base_dir: where relative file paths are resolved.
    """
    if isinstance(cell, str):
        stripped = cell.strip()
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
    return [header] + body


def _checked(rows: Rows, unit: str, first_line: int = 1) -> Rows:
    for index, row in enumerate(rows[1:], start=1):
        if len(row) != len(rows[0]):
            raise ValueError(f"ragged rows: {unit} {index + first_line} has {len(row)} cells, "
                             f"{unit} {first_line} has {len(rows[0])}")
    return rows


def _read_file(path: str) -> Rows:
    if not os.path.isfile(path):
        raise ValueError(f"no such table file: {path}")
    stat = os.stat(path)
    return [list(row) for row in _read_file_cached(path, stat.st_mtime_ns, stat.st_size)]


@lru_cache(maxsize=64)  # one table is often read by many rows (table QA)
def _read_file_cached(path: str, mtime_ns: int, size: int) -> Tuple[Tuple[str, ...], ...]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    with open(path, newline="", encoding="utf-8") as f:
        rows = [[cell_text(v) for v in row] for row in csv.reader(f, delimiter=delimiter) if row]
    try:
        _checked(rows, "line")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return tuple(tuple(row) for row in rows)
