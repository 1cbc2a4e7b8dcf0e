"""Checking and sizing every row of a data file: in chunks of rows, in this process or in
several forked ones (``--scan-workers``), the chunks' results joined in file order.

A scan is what a file's first start costs (later starts map its index cache), so on a
large file it is spread over the machine's cores. Forked workers inherit the dataset
that scans (nothing of it is pickled); only each chunk's arrays, errors, references and
notes come back.
"""
import logging
import multiprocessing
import os
import time
from collections import Counter
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

CHUNK_ROWS = 5_000  # a worker's unit: large enough that forking pays, small for balance
MAX_AUTO_WORKERS = 8
PROGRESS_SECONDS = 10.0


class RowScan(NamedTuple):
    """What scanning some rows found: the usable rows' indices and sizes, their
    references (validation only), the bad rows' errors and the modalities' notes."""

    rows: np.ndarray  # int32 row indices
    src_sizes: np.ndarray  # int32
    tgt_sizes: np.ndarray  # int32
    feature_sizes: np.ndarray  # int32, rows x feature slots
    references: List[Any]
    errors: List[Exception]
    notes: Counter


ChunkScanner = Callable[[int, int], RowScan]


def scan_workers(requested: int) -> int:
    """Processes for a scan: ``requested``, or where it is 0 one per usable CPU core
    (at most ``MAX_AUTO_WORKERS``)."""
    if requested < 0:
        raise ValueError(f"--scan-workers must be 0 (one per core) or more, not {requested}")
    if requested:
        return requested
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return min(MAX_AUTO_WORKERS, cores)


def scan_rows(scan_chunk: ChunkScanner, count: int, workers: int, path: str) -> RowScan:
    """``scan_chunk(start, stop)`` over rows ``0 .. count`` in chunks, ``workers``
    processes at once (forked: see the module), joined in file order.

    Args:
        scan_chunk: scans rows ``start .. stop`` of the file.
        count: the file's rows.
        workers: processes (1: this one).
        path: the file, for progress lines.
    """
    bounds = [(start, min(start + CHUNK_ROWS, count))
              for start in range(0, count, CHUNK_ROWS)] or [(0, 0)]
    workers = min(workers, len(bounds))
    # a daemonic process (a DataLoader worker) may not start processes
    if (workers <= 1 or multiprocessing.current_process().daemon
            or "fork" not in multiprocessing.get_all_start_methods()):
        return _joined((scan_chunk(*b) for b in bounds), count, path)
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=_adopt, initargs=(scan_chunk,)) as pool:
        return _joined(pool.imap(_scan_adopted, bounds), count, path, workers)


_adopted: Optional[ChunkScanner] = None  # a worker's scanner, inherited through fork


def _adopt(scan_chunk: ChunkScanner) -> None:
    global _adopted
    _adopted = scan_chunk


def _scan_adopted(bounds: Tuple[int, int]) -> RowScan:
    return _adopted(*bounds)


def _joined(parts: Iterable[RowScan], count: int, path: str, workers: int = 1) -> RowScan:
    """The chunks' results in order, one progress line every ``PROGRESS_SECONDS``."""
    done, started, last_report = [], time.monotonic(), time.monotonic()
    for part in parts:
        done.append(part)
        if time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            rows = min(len(done) * CHUNK_ROWS, count)
            logger.info(f"{path}: scanned {rows:,} of {count:,} rows "
                        f"({last_report - started:.0f} s, {workers} "
                        f"process{'es' if workers > 1 else ''})")
    return RowScan(*(np.concatenate([getattr(p, name) for p in done])
                     for name in ("rows", "src_sizes", "tgt_sizes", "feature_sizes")),
                   [r for p in done for r in p.references], [e for p in done for e in p.errors],
                   sum((p.notes for p in done), Counter()))

