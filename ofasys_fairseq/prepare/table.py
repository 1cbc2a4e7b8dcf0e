"""Any CSV or TSV file (a header line, then rows) to one subset's JSONL, its columns
chosen and renamed: ``--columns caption=text,image=file_name``. Columns named in
``--path-columns`` hold file paths relative to the input file: they are rewritten
relative to the output (absolute paths and data URIs stay). A row with an empty cell in
a chosen column is skipped and counted.

    ofasys-prepare table reviews.csv data/reviews --subset train --columns review=text,label=stars
"""
import csv
import os
from typing import Dict, Iterator, Sequence

from tqdm import tqdm

from .output import write_subset
from .summary import Summary


def parse_columns(text: str) -> Dict[str, str]:
    """``"caption=text,image=file"`` -> {ours: theirs}; ``"text"`` keeps a name."""
    columns = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ours, _, theirs = (part.strip() for part in item.partition("="))
        columns[ours] = theirs or ours
    if not columns:
        raise ValueError("--columns: name at least one column (new=old or old)")
    return columns


def convert_table(path: str, out_dir: str, subset: str, columns: Dict[str, str],
                  path_columns: Sequence[str] = ()) -> Summary:
    """Write ``out_dir/<subset>.jsonl``.

    Args:
        path: the ``.csv`` or ``.tsv`` file.
        out_dir: where the JSONL file goes.
        subset: its name (``train``, ``valid``, ...).
        columns: our column name -> the file's.
        path_columns: our columns that hold paths relative to ``path``.
    """
    unknown = [c for c in path_columns if c not in columns]
    if unknown:
        raise ValueError(f"--path-columns {', '.join(unknown)}: not among --columns")
    summary = Summary()
    write_subset(out_dir, subset, _rows(path, out_dir, columns, path_columns, summary), summary)
    return summary


def _rows(path: str, out_dir: str, columns: Dict[str, str], path_columns: Sequence[str],
          summary: Summary) -> Iterator[dict]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [theirs for theirs in columns.values() if theirs not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column(s) {', '.join(missing)} in its header "
                             f"{reader.fieldnames}")
        for cells in tqdm(reader, desc=os.path.basename(path), unit="row", disable=None):
            row = {ours: (cells[theirs] or "").strip() for ours, theirs in columns.items()}
            empty = [ours for ours, value in row.items() if not value]
            if empty:
                summary.skip(f"empty cell in column {empty[0]}")
                continue
            for column in path_columns:
                if not (os.path.isabs(row[column]) or row[column].startswith("data:")):
                    row[column] = os.path.relpath(os.path.join(base, row[column]), out_dir)
            yield row
