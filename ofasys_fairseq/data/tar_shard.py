"""WebDataset tar shards as tables: a sample's files become one row.

A sample is the files of a tar that share a key (WebDataset's convention, through its
``base_plus_ext``: ``000042.json``, ``000042.image.jpg`` belong to sample ``000042``).
Its row holds the fields of its ``.json`` file, the text of each ``.txt`` file and the
bytes of every other file, by column: ``KEY.COLUMN.EXT`` fills ``COLUMN`` (``image.jpg``
-> ``image``), a file with one extension fills a column of that name (``jpg``, ``txt``,
as WebDataset names fields). Media modalities read bytes cells as they read files.

One pass records where each sample's files lie in the tar (cached like a file's row
index), so ``shard[i]`` reads sample ``i`` by seeking; ``stream_rows`` reads a shard from
start to end through WebDataset's tar iterator, as a training stream does.
"""
import json
import os
import re
import tarfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_iterator

from .index_cache import cached_index
from .table import DataError, SeekableFile

TEXT_EXTENSIONS = ("txt", "text")
SKIPPED_BY_WEBDATASET = re.compile(r"__[^/]*__($|/)")  # tar_file_iterator's skip_meta


class SampleKey(str):
    """Where a sample is, as errors name it (in place of a line number)."""

    def __new__(cls, key: str):
        return super().__new__(cls, f"sample '{key}'")


class TarShard(SeekableFile):
    """The samples of one WebDataset tar file as rows, addressable by index.

    Args:
        path: a ``.tar`` file.
        cached: keep the sample index in the index cache (built once, memory-mapped after).
        cache_dir: where the index cache lives (default: beside the file).
    """

    header = None  # columns are each sample's own, as in a .jsonl file

    def __init__(self, path: str, cached: bool = False, cache_dir: Optional[str] = None):
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))
        arrays, info = (cached_index(path, "samples", "", self._index, cache_dir)[:2]
                        if cached else self._index())
        self._starts = arrays["starts"]  # sample i's files: members starts[i]..starts[i+1]
        self._offsets, self._sizes = arrays["offsets"], arrays["sizes"]
        self._fields = arrays["fields"]  # each member's index into self.field_names
        self._keys, self._key_ends = arrays["keys"], arrays["key_ends"]
        self.field_names: List[str] = info["fields"]

    def _index(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """One pass over the tar's headers: each sample's key and its files' places."""
        starts, offsets, sizes, fields = [], [], [], []
        keys, key_ends, field_ids = bytearray(), [], {}
        current, seen = None, set()
        try:
            with tarfile.open(self.path, mode="r|*") as stream:
                for member in stream:
                    key, field = _key_and_field(member)
                    if key is None:
                        continue
                    if key != current:
                        current, seen = key, set()
                        starts.append(len(offsets))
                        keys += key.encode("utf-8")
                        key_ends.append(len(keys))
                    if field in seen:
                        raise DataError(f"two files for field '{field}'", self.path,
                                        SampleKey(key))
                    seen.add(field)
                    offsets.append(member.offset_data)
                    sizes.append(member.size)
                    fields.append(field_ids.setdefault(field, len(field_ids)))
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DataError(f"not a readable tar file ({error})", self.path) from None
        starts.append(len(offsets))
        return ({"starts": np.array(starts, dtype=np.int64),
                 "offsets": np.array(offsets, dtype=np.int64),
                 "sizes": np.array(sizes, dtype=np.int64),
                 "fields": np.array(fields, dtype=np.int32),
                 "keys": np.frombuffer(bytes(keys), dtype=np.uint8),
                 "key_ends": np.array(key_ends, dtype=np.int64)},
                {"fields": list(field_ids)})

    def __len__(self) -> int:
        return len(self._starts) - 1

    def key(self, index: int) -> str:
        start = int(self._key_ends[index - 1]) if index else 0
        return bytes(self._keys[start:int(self._key_ends[index])]).decode("utf-8")

    def line_number(self, index: int) -> SampleKey:
        return SampleKey(self.key(index))

    @property
    def columns(self) -> Sequence[str]:
        return list(self[0].keys()) if len(self) else []

    def __getitem__(self, index: int) -> Dict[str, object]:
        f = self._open()
        files = {}
        for member in range(int(self._starts[index]), int(self._starts[index + 1])):
            f.seek(int(self._offsets[member]))
            files[self.field_names[int(self._fields[member])]] = f.read(int(self._sizes[member]))
        return sample_row(files, self.path, self.line_number(index))

    def stream_rows(self) -> Iterator[Tuple[SampleKey, Dict[str, object]]]:
        """Every sample's place and row in tar order, read from start to end with
        WebDataset."""
        with open(self.path, "rb") as f:
            files = ({**item, "__url__": self.path} for item in tar_file_iterator(f))
            for sample in group_by_keys(files):
                where = SampleKey(sample["__key__"])
                yield where, sample_row({field: value for field, value in sample.items()
                                         if not field.startswith("__")}, self.path, where)


def _key_and_field(member: tarfile.TarInfo) -> Tuple[Optional[str], Optional[str]]:
    """A regular file's sample key and field, as WebDataset groups them; (None, None)
    for what it skips (directories, ``__meta__`` files, names without an extension)."""
    if not member.isreg() or SKIPPED_BY_WEBDATASET.match(member.name):
        return None, None
    key, field = base_plus_ext(member.name)
    return (key, field.lower()) if key is not None else (None, None)


def sample_row(files: Dict[str, bytes], path: str, where: SampleKey) -> Dict[str, object]:
    """A sample's row: its ``.json`` fields, its texts, its other files' bytes."""
    row: Dict[str, object] = {}
    if "json" in files:
        row.update(_json_fields(files["json"], path, where))
    for field, data in files.items():
        if field == "json":
            continue
        column, _, extension = field.rpartition(".")
        column, extension = (column or field), (extension or field)
        if column in row:
            raise DataError(f"column '{column}' comes from two of the sample's files",
                            path, where)
        row[column] = _text(data, path, where, column) if extension in TEXT_EXTENSIONS \
            else data
    return row


def _json_fields(data: bytes, path: str, where: SampleKey) -> Dict[str, object]:
    try:
        fields = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"its .json file is not valid JSON ({error})", path, where) from None
    if not isinstance(fields, dict):
        raise DataError(f"its .json file holds a {type(fields).__name__}, expected an object",
                        path, where)
    return fields


def _text(data: bytes, path: str, where: SampleKey, column: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not valid UTF-8 (byte {error.start + 1})", path, where,
                        column) from None
