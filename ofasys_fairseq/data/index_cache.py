"""What opening a data file computes (row offsets, line numbers, every example's sizes),
built once and memory-mapped on later starts.

A cache entry is a directory of ``.npy`` arrays and a ``meta.json`` holding what the
arrays depend on: the data file's path, size and modification time, and a key from the
caller (the plan, the vocabulary, the settings), and the package's version (a release that
sizes examples otherwise bumps it). An entry whose file, key or version differs is
stale and rebuilt; one whose arrays do not match the checksums in its meta is corrupt,
reported and rebuilt: neither is trusted. Entries live beside the data file in
``.ofasys-cache/`` (shared by every rank and DataLoader worker on a machine, and by
machines sharing the file system), or under ``--data-cache-dir``; where the data's
directory is read-only, under the user's cache directory. An exclusive file lock makes one
process build while the others wait and then map its arrays.
"""
import fcntl
import hashlib
import json
import logging
import os
import shutil
from importlib import metadata
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from .vocabulary import default_cache_dir

logger = logging.getLogger(__name__)

FORMAT = 1
Arrays = Dict[str, np.ndarray]


class CachedIndex(NamedTuple):
    """Arrays (memory-mapped when read from the cache), the JSON-able info stored with
    them, and whether this call built them."""

    arrays: Arrays
    info: Dict[str, Any]
    built: bool


def fingerprint(*parts: Any) -> str:
    """A hex digest of ``parts`` (strings, numbers, None, bytes, arrays, tensors, and
    lists, tuples and dicts of them), for cache keys."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, dict):
            digest.update(b"{")
            for key in sorted(value, key=str):
                add(str(key))
                add(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                add(item)
            digest.update(b"]")
        elif isinstance(value, bytes):
            digest.update(b"b%d:" % len(value) + value)
        elif hasattr(value, "numpy") or isinstance(value, np.ndarray):  # tensors, arrays
            array = np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value)
            digest.update(f"a{array.dtype}{array.shape}:".encode() + array.tobytes())
        else:
            text = repr(value).encode()
            digest.update(b"r%d:" % len(text) + text)

    add(list(parts))
    return digest.hexdigest()


def cached_index(data_path: str, name: str, key: str,
                 build: Callable[[], Tuple[Arrays, Dict[str, Any]]],
                 cache_dir: Optional[str] = None) -> CachedIndex:
    """``build()``'s arrays and info for ``data_path``, from the cache entry ``name`` when
    it holds them for this file and ``key``, else built and saved there.

    Args:
        data_path: the data file the arrays describe.
        name: the entry's name among the file's entries (what the arrays are).
        key: what the arrays depend on besides the file (see ``fingerprint``).
        build: computes ``(arrays, info)``; called only when the cache cannot serve them.
        cache_dir: where entries live (default: beside the file, see the module).
    """
    entry = _entry_dir(data_path, name, cache_dir)
    expected = {"format": FORMAT, "version": _package_version(), "file": _file_key(data_path),
                "key": key}
    with open(entry + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then map its arrays
        loaded = _load(entry, expected)
        if loaded is not None:
            return CachedIndex(*loaded, built=False)
        arrays, info = build()
        _save(entry, expected, arrays, info)
        loaded = _load(entry, expected)
        if loaded is None:
            raise OSError(f"the index cache {entry} could not be read back after writing it")
        return CachedIndex(*loaded, built=True)


def _package_version() -> str:
    try:
        return metadata.version("ofasys-fairseq")
    except metadata.PackageNotFoundError:  # the source tree, not installed
        return "source"


def _entry_dir(data_path: str, name: str, cache_dir: Optional[str]) -> str:
    path = os.path.abspath(data_path)
    base = os.path.basename(path)
    if cache_dir is None:
        beside = os.path.join(os.path.dirname(path), ".ofasys-cache")
        if _writable(beside):
            return os.path.join(beside, f"{base}.{name}")
        cache_dir = os.path.join(default_cache_dir(), "data-index")
    location = hashlib.sha256(path.encode()).hexdigest()[:16]
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, f"{base}.{location}.{name}")


def _writable(directory: str) -> bool:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def _file_key(path: str) -> Dict[str, Any]:
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _checksum(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _load(entry: str, expected: Dict[str, Any]) -> Optional[Tuple[Arrays, Dict[str, Any]]]:
    """The entry's arrays and info, or None (logged) when missing, stale or corrupt."""
    meta_path = os.path.join(entry, "meta.json")
    if not os.path.exists(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        stale = [k for k in expected if meta.get(k) != expected[k]]
        if stale:
            logger.info(f"index cache {entry} is stale (its {', '.join(stale)} changed): "
                        f"rebuilding it")
            return None
        arrays = {}
        for name, spec in meta["arrays"].items():
            path = os.path.join(entry, f"{name}.npy")
            # an empty array has no bytes to map
            array = np.load(path, mmap_mode="r" if spec["shape"] and 0 not in spec["shape"]
                            else None, allow_pickle=False)
            if (list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]
                    or _checksum(array) != spec["sha256"]):
                raise ValueError(f"{name}.npy does not match its checksum")
            arrays[name] = array
        return arrays, meta["info"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning(f"index cache {entry} is corrupt ({error}): rebuilding it")
        return None


def _save(entry: str, expected: Dict[str, Any], arrays: Arrays, info: Dict[str, Any]) -> None:
    """Write the entry beside its final place, then swap it in."""
    staging = f"{entry}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    specs = {}
    for name, array in arrays.items():
        np.save(os.path.join(staging, f"{name}.npy"), array, allow_pickle=False)
        specs[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                       "sha256": _checksum(array)}
    with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as f:
        json.dump({**expected, "arrays": specs, "info": info}, f)
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(staging, entry)
