"""A data file and its media as WebDataset tar shards (``<subset>-00000.tar``, ...).

Each row becomes one sample keyed by its row number: its media columns' files as
``KEY.COLUMN.EXT`` (the file's own bytes and extension), every other column in
``KEY.json``. Training reads the shards back as rows with the same columns
(``data/tar_shard.py``), so the same instruction trains on either.
"""
import json
import os
from typing import Sequence

import webdataset
from tqdm import tqdm

from ..data.table import DataError, open_table
from ..modalities.encoded import resolve_path
from .summary import Summary


def write_shards(path: str, out_dir: str, subset: str, media_columns: Sequence[str],
                 samples_per_shard: int) -> Summary:
    """Write ``out_dir/<subset>-NNNNN.tar`` from the rows of ``path`` (``.jsonl``,
    ``.tsv``, ``.csv``); ``media_columns`` hold paths of files (relative to ``path``)
    that go into the shards. A missing file is an error naming its line and column."""
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be at least 1, got {samples_per_shard}")
    table = open_table(path)
    os.makedirs(out_dir, exist_ok=True)
    summary = Summary()
    pattern = os.path.join(out_dir, f"{subset}-%05d.tar")
    # mtime fixed: the same rows make the same bytes
    with webdataset.ShardWriter(pattern, maxcount=samples_per_shard, verbose=0,
                                encoder=False, mtime=0) as writer:
        for index in tqdm(range(len(table)), desc=f"{subset} shards", unit="row"):
            writer.write(_sample(table, index, media_columns))
            summary.written[writer.fname] = summary.written.get(writer.fname, 0) + 1
    return summary


def _sample(table, index: int, media_columns: Sequence[str]) -> dict:
    row, line = table[index], table.line_number(index)
    sample = {"__key__": f"{index:09d}"}
    for column in media_columns:
        cell = row.pop(column, None)
        if not isinstance(cell, str) or not cell.strip():
            raise DataError(f"expected the path of a media file, found {cell!r}"[:200],
                            table.path, line, column)
        file = resolve_path(cell.strip(), table.base_dir)
        extension = os.path.splitext(file)[1].lower().lstrip(".")
        if not os.path.isfile(file) or not extension:
            raise DataError(f"no such file with an extension (.jpg, .wav, ...): {file}",
                            table.path, line, column)
        with open(file, "rb") as f:
            sample[f"{column}.{extension}"] = f.read()
    sample["json"] = json.dumps(row, ensure_ascii=False).encode("utf-8")
    return sample
