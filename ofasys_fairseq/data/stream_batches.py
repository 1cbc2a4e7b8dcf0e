"""Training batches streamed from a subset's WebDataset shards.

Each data-parallel rank reads whole shards, and each of its DataLoader workers whole
shards of those, from start to end (sequential reads, as from network storage), holding
at most a shuffle buffer of rows at a time: the buffer's rows are ordered by size, cut
into batches under ``--max-tokens`` / ``--batch-size`` and the batches shuffled.

What goes into every batch is a pure function of the examples' sizes (the index scanned
once per shard), the seed and the epoch (``StreamPlan``). So every rank knows how many
batches every other rank has and pads with empty batches (fairseq's dummy batches) to the
longest, as data-parallel steps must match; the epoch has a known length (progress bar,
schedules); and a resumed run skips exactly the batches it had trained (the same world
size, workers and buffer: otherwise it skips as many batches of the new layout, and warns).
"""
import itertools
import logging
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import iterators

logger = logging.getLogger(__name__)


class StreamLayout(NamedTuple):
    ranks: int
    workers: int  # per rank; DataLoader workers, or 1 reading in the main process
    buffer: int  # rows in a worker's shuffle buffer


class Pool(NamedTuple):
    """A buffer's worth of a worker's rows and the batches cut from them."""

    examples: np.ndarray  # example indices in reading order
    batches: List[np.ndarray]  # in the order they are trained


class StreamPlan:
    """Every batch of one epoch, per rank and worker.

    Args:
        dataset: an ``InstructionDataset`` over the shards (``starts``, ``rows``, sizes).
        kept: which examples fit ``--max-positions`` (boolean, per example).
        layout: ranks, workers per rank, buffer size.
        shuffle: shuffle the shards' order, each buffer and its batches (training).
    """

    def __init__(self, dataset, kept: np.ndarray, layout: StreamLayout, max_tokens,
                 max_sentences, required_batch_size_multiple: int, seed: int, epoch: int,
                 shuffle: bool = True):
        self.layout = layout
        files = len(dataset.starts) - 1
        order = np.random.default_rng([seed, epoch]).permutation(files) if shuffle \
            else np.arange(files)
        self.files: Dict[Tuple[int, int], List[int]] = {
            (r, w): [] for r in range(layout.ranks) for w in range(layout.workers)}
        for position, file in enumerate(order):
            rank, turn = position % layout.ranks, position // layout.ranks
            self.files[(rank, turn % layout.workers)].append(int(file))
        self.pools: Dict[Tuple[int, int], List[Pool]] = {}
        for (rank, worker), slot_files in self.files.items():
            stream = np.concatenate([np.arange(dataset.starts[f], dataset.starts[f + 1])
                                     for f in slot_files] or [np.zeros(0, dtype=np.int64)])
            stream = stream[kept[stream]]
            rng = np.random.default_rng([seed, epoch, rank, worker])
            self.pools[(rank, worker)] = [
                _pool(dataset, stream[start:start + layout.buffer], rng if shuffle else None,
                      max_tokens, max_sentences, required_batch_size_multiple)
                for start in range(0, len(stream), layout.buffer)]

    def worker_batches(self, rank: int, worker: int) -> int:
        return sum(len(p.batches) for p in self.pools[(rank, worker)])

    def rank_order(self, rank: int) -> List[int]:
        """The worker of each of the rank's batches in turn: a DataLoader takes one batch
        from each worker in turn, passing over the workers that have finished."""
        counts = [self.worker_batches(rank, w) for w in range(self.layout.workers)]
        return [w for turn in range(max(counts, default=0)) for w in range(len(counts))
                if turn < counts[w]]

    def length(self) -> int:
        """Batches per rank in this epoch: the longest rank's (the others pad)."""
        return max(len(self.rank_order(r)) for r in range(self.layout.ranks))


def _pool(dataset, examples: np.ndarray, rng, max_tokens, max_sentences,
          multiple: int) -> Pool:
    order = rng.permutation(len(examples)) if rng is not None else np.arange(len(examples))
    ordered = examples[order]
    ordered = ordered[np.argsort(dataset.num_tokens_vec(ordered), kind="mergesort")]
    batches = list(dataset.batch_by_size(ordered, max_tokens, max_sentences, multiple))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return Pool(examples, batches)


class WorkerStreams(torch.utils.data.IterableDataset):
    """One rank's workers: each reads its shards' rows in order and yields collated
    batches as the plan cuts them, after skipping the first ``skip[worker]``.

    Args:
        first: the worker whose batch comes next: DataLoader worker ``i`` plays worker
            ``(first + i) % workers``, as a DataLoader takes batches from its workers in
            turn from worker 0 (so a resumed epoch goes on in the same turns).
    """

    def __init__(self, dataset, plan: StreamPlan, rank: int, skip: Sequence[int],
                 first: int = 0):
        self.dataset, self.skip, self.first = dataset, list(skip), first
        self.files = [plan.files[(rank, w)] for w in range(plan.layout.workers)]
        self.pools = [plan.pools[(rank, w)] for w in range(plan.layout.workers)]

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = (self.first + (info.id if info is not None else 0)) % len(self.pools)
        rows = self._rows(self.files[worker],
                          itertools.chain.from_iterable(p.examples for p in self.pools[worker]))
        skip = self.skip[worker]
        for pool in self.pools[worker]:
            wanted = skip < len(pool.batches)
            held = {}
            for index in pool.examples:
                found, line, row = next(rows)
                assert found == index, "a shard changed since its index was built"
                if wanted:
                    held[int(index)] = (row, line)
            for batch in pool.batches:
                if skip:
                    skip -= 1
                    continue
                yield self.dataset.collater([self.dataset.example(int(i), *held[int(i)])
                                             for i in batch])

    def _rows(self, files: Sequence[int], wanted: Iterator[int]) -> Iterator[tuple]:
        """(example index, where, row) of each ``wanted`` example (in reading order:
        ``files`` in turn, each from start to end), reading no further than needed."""
        dataset, index = self.dataset, next(wanted, None)
        for file in files:
            start, end = int(dataset.starts[file]), int(dataset.starts[file + 1])
            if index is None or not start <= index < end:
                continue  # nothing wanted here (its rows too long, or none usable)
            for number, (line, row) in enumerate(dataset.tables[file].stream_rows()):
                if number == int(dataset.rows[index]):
                    yield index, line, row
                    index = next(wanted, None)
                    if index is None or not start <= index < end:
                        break


class _Padded:
    """A rank's ``real`` batches, then ``padding`` empty ones (fairseq's dummy batches)."""

    def __init__(self, loader, real: int, padding: int):
        self.loader, self.real, self.padding = loader, real, padding

    def __len__(self) -> int:
        return self.real + self.padding

    def __iter__(self):
        yield from self.loader
        yield from itertools.repeat({}, self.padding)


def _identity(batch):
    return batch


class StreamEpochIterator(iterators.EpochBatchIterating):
    """fairseq's epoch iterator over ``StreamPlan`` batches of one rank (``shard_id`` of
    ``num_shards``): ``len`` is the epoch's batches per rank, the state is (epoch,
    batches trained, layout).

    Args:
        plan_of: epoch -> its ``StreamPlan``.
    ``first_batch`` is the rank's first real batch (fairseq shapes its dummy batch on it).
    """

    def __init__(self, dataset, plan_of, layout: StreamLayout, shard_id: int,
                 num_workers: int, epoch: int, buffer_size: int = 0):
        self.dataset, self.plan_of, self.layout = dataset, plan_of, layout
        self.shard_id, self.num_workers, self.buffer_size = shard_id, num_workers, buffer_size
        self.epoch = max(epoch, 1)
        self._plan = plan_of(self.epoch)
        self._current = None
        self._resume_at = 0

    def __len__(self) -> int:
        return self._plan.length()

    @property
    def next_epoch_idx(self) -> int:
        return self.epoch + 1 if self._current is not None and self.end_of_epoch() else self.epoch

    def next_epoch_itr(self, shuffle=True, fix_batches_to_gpus=False, set_dataset_epoch=True):
        epoch = self.next_epoch_idx
        if epoch != self.epoch:
            self.epoch, self._plan = epoch, self.plan_of(epoch)
        if set_dataset_epoch:
            self.dataset.set_epoch(self.epoch)
        offset, self._resume_at = self._resume_at, 0
        self._current = self._iterator(offset)
        return self._current

    def _iterator(self, offset: int) -> iterators.CountingIterator:
        order = self._plan.rank_order(self.shard_id)
        skip = [sum(1 for w in order[:offset] if w == worker)
                for worker in range(self.layout.workers)]
        streams = WorkerStreams(self.dataset, self._plan, self.shard_id, skip,
                                order[offset] if offset < len(order) else 0)
        loader = torch.utils.data.DataLoader(
            streams, batch_size=None, collate_fn=_identity, num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available())
        length = self._plan.length()
        logger.info(f"epoch {self.epoch}: streaming {len(order)} batches of "
                    f"{sum(len(f) for f in streams.files)} shard(s) on rank {self.shard_id}, "
                    f"{length} per rank (the longest rank's: the others add empty batches)")
        itr = _Padded(loader, max(0, len(order) - offset), length - max(offset, len(order)))
        if self.buffer_size > 0:
            itr = iterators.BufferedIterator(self.buffer_size, itr)
        return iterators.CountingIterator(itr, start=offset, total=length)

    def end_of_epoch(self) -> bool:
        return not self._current.has_next()

    @property
    def iterations_in_epoch(self) -> int:
        return self._current.n if self._current is not None else self._resume_at

    def state_dict(self) -> dict:
        if self._current is not None and self.end_of_epoch():
            return {"epoch": self.epoch + 1, "iterations_in_epoch": 0,
                    "layout": list(self.layout)}
        return {"epoch": self.epoch, "iterations_in_epoch": self.iterations_in_epoch,
                "layout": list(self.layout)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._plan = state["epoch"], self.plan_of(state["epoch"])
        self._resume_at = state.get("iterations_in_epoch", 0)
        if self._resume_at and state.get("layout") != list(self.layout):
            logger.warning(f"resuming a stream with another layout (ranks, workers, buffer: "
                           f"{state.get('layout')} then, {list(self.layout)} now): skipping "
                           f"{self._resume_at} batches of the new plan, so this epoch may "
                           f"repeat or miss rows")

    @property
    def first_batch(self):
        for pool in self._plan.pools[(self.shard_id, 0)]:
            if pool.batches:
                return self.dataset.collater([self.dataset[int(i)] for i in pool.batches[0]])
        return "DUMMY"
