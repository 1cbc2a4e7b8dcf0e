"""Which indices each training step of an epoch reads, for every batch mode.

The epoch's batch list is a pure function of (seed, epoch, world size, update
frequency): fairseq's ``EpochBatchIterator`` gives rank ``r`` the entries ``r, r + W,
r + 2W, ...`` and resuming skips the ones already trained, so a resumed run sees the
very batches (and tasks) an uninterrupted one would.

* ``homogeneous``: entry ``r + (u * k + m) * W`` (rank r, micro-batch m of update u,
  W ranks, k = ``--update-freq``) is the next batch of task
  ``draw_task(p, seed, update, slot=r * k + m)``. One process with ``--update-freq 2``
  and two with ``--update-freq 1`` therefore train the same batches in each update.
* ``round``: every entry holds the next batch of every task trained at its update (all,
  or its stage's).
* ``mixed``: batches are filled under the run's budget with examples of all tasks, in
  proportion to ``p`` (smooth weighted round robin).
* ``sequential`` (validation): every task's batches, task after task, unshuffled.

An epoch covers as many batches (``homogeneous``), rounds (``round``: as many as the
largest task has batches) or examples (``mixed``) as one pass over all tasks; a task
drawn more often than its size allows starts another shuffled pass.
"""
import itertools
import math
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
from fairseq.data import data_utils

from .instruction_dataset import InstructionDataset
from .task_sampler import draw_task


class BatchBudget(NamedTuple):
    max_tokens: Optional[int]
    max_sentences: Optional[int]


class TaskSchedule:
    """Args:
        datasets: the tasks' training datasets (indices offset by ``offsets``).
        offsets: first global index of each task.
        shares: update -> the sampler's distribution over tasks at that update
            (``SamplingSchedule.at``; constant in ``mixed`` mode).
        budgets: per task, its batch budget (the run's budget in ``mixed`` mode).
        mode: ``homogeneous``, ``mixed``, ``round`` or ``sequential``.
        seed: the run's seed.
        max_positions: longest (source, target) kept; longer examples fail unless
            ``ignore_invalid_inputs``, as in fairseq.
        num_shards / update_freq: data-parallel world size and ``--update-freq``.
    """

    def __init__(self, datasets: Sequence[InstructionDataset], offsets: Sequence[int],
                 shares: Callable[[int], np.ndarray], budgets: Sequence[BatchBudget], mode: str,
                 seed: int, max_positions=None, ignore_invalid_inputs: bool = False,
                 required_batch_size_multiple: int = 1, num_shards: int = 1,
                 update_freq: int = 1):
        self.datasets, self.offsets = list(datasets), [int(o) for o in offsets]
        self.shares, self.budgets, self.mode = shares, list(budgets), mode
        self.seed, self.num_shards, self.update_freq = seed, num_shards, update_freq
        self.required_batch_size_multiple = required_batch_size_multiple
        self.kept = [self._kept_mask(d, max_positions, ignore_invalid_inputs)
                     for d in self.datasets]
        self.batches_per_pass = [len(self._task_batches(t, epoch=1, cycle=0))
                                 for t in range(len(self.datasets))]

    @staticmethod
    def _kept_mask(dataset: InstructionDataset, max_positions, ignore_invalid: bool):
        indices = np.arange(len(dataset))
        if max_positions is None:
            return np.ones(len(dataset), dtype=bool)
        kept, ignored = dataset.filter_indices_by_size(indices, max_positions)
        if len(ignored) and not ignore_invalid:
            raise ValueError(f"{dataset.name}: {len(ignored)} examples (row index "
                             f"{ignored[0]} first) are longer than {max_positions}; skip them "
                             f"with --skip-invalid-size-inputs-valid-test")
        if len(kept) == 0:
            raise ValueError(f"{dataset.name}: no example fits {max_positions} "
                             f"(source, target) positions, so this task cannot be trained")
        mask = np.zeros(len(dataset), dtype=bool)
        mask[kept] = True
        return mask

    def _order(self, task: int, epoch: int, cycle: int) -> np.ndarray:
        """One shuffled pass over the task's kept examples, sorted by size as fairseq
        batches them (seeded by (seed, epoch, task, pass))."""
        with data_utils.numpy_seed(self.seed, epoch, task, cycle):
            order = self.datasets[task].ordered_indices()
        return order[self.kept[task][order]]

    def _task_batches(self, task: int, epoch: int, cycle: int,
                      shuffle: bool = True) -> List[np.ndarray]:
        budget = self.budgets[task]
        batches = self.datasets[task].batch_by_size(
            self._order(task, epoch, cycle), budget.max_tokens, budget.max_sentences,
            self.required_batch_size_multiple)
        if not shuffle:
            return [np.asarray(b) + self.offsets[task] for b in batches]
        with data_utils.numpy_seed(self.seed, epoch, task, cycle, 1):
            order = np.random.permutation(len(batches))
        return [np.asarray(batches[i]) + self.offsets[task] for i in order]

    def _batch_stream(self, task: int, epoch: int) -> Iterator[np.ndarray]:
        return itertools.chain.from_iterable(self._task_batches(task, epoch, cycle)
                                             for cycle in itertools.count())

    def _example_stream(self, task: int, epoch: int) -> Iterator[int]:
        return itertools.chain.from_iterable(self._order(task, epoch, cycle) + self.offsets[task]
                                             for cycle in itertools.count())

    def _steps(self, entries: int) -> int:
        """Updates in an epoch of ``entries`` batches (every rank the same number)."""
        return math.ceil(entries / (self.num_shards * self.update_freq))

    # -- the epoch's batch list --------------------------------------------------
    def batches(self, epoch: int) -> List[np.ndarray]:
        if self.mode == "homogeneous":
            return self._homogeneous(epoch)
        if self.mode == "round":
            return self._rounds(epoch)
        if self.mode == "mixed":
            return self._mixed(epoch)
        return [b for t in range(len(self.datasets))
                for b in self._task_batches(t, epoch, 0, shuffle=False)]

    def task_sequence(self, epoch: int) -> List[List[int]]:
        """Per update of the epoch, the task of each slot (homogeneous mode)."""
        slots = self.num_shards * self.update_freq
        updates = self._steps(sum(self.batches_per_pass))
        first = (epoch - 1) * updates
        sequence = []
        for u in range(first, first + updates):
            shares = self.shares(u)
            sequence.append([draw_task(shares, self.seed, u, s) for s in range(slots)])
        return sequence

    def _homogeneous(self, epoch: int) -> List[np.ndarray]:
        streams = [self._batch_stream(t, epoch) for t in range(len(self.datasets))]
        shards, freq = self.num_shards, self.update_freq
        sequence = self.task_sequence(epoch)
        plan: List[np.ndarray] = [None] * (len(sequence) * shards * freq)
        for u, tasks in enumerate(sequence):
            for slot, task in enumerate(tasks):
                rank, micro = divmod(slot, freq)
                plan[rank + (u * freq + micro) * shards] = next(streams[task])
        return plan

    def _rounds(self, epoch: int) -> List[np.ndarray]:
        """Each update's rounds hold the next batch of every task trained then (a share
        above 0: its stage's tasks)."""
        streams = [self._batch_stream(t, epoch) for t in range(len(self.datasets))]
        updates = self._steps(max(self.batches_per_pass))
        first = (epoch - 1) * updates
        plan = []
        for update in range(first, first + updates):
            active = np.flatnonzero(self.shares(update) > 0)
            plan.extend(np.concatenate([next(streams[t]) for t in active])
                        for _ in range(self.num_shards * self.update_freq))
        return plan

    def _mixed(self, epoch: int) -> List[np.ndarray]:
        max_tokens, max_sentences = self.budgets[0]
        streams = [self._example_stream(t, epoch) for t in range(len(self.datasets))]
        heads = [next(s) for s in streams]
        credit, shares = np.zeros(len(self.datasets)), self.shares(0)
        total = sum(int(k.sum()) for k in self.kept)
        batches, batch = [], MixedBatch(max_tokens, max_sentences)
        for _ in range(total):
            task = int(np.argmax(credit + shares))
            index = int(heads[task])
            if not batch.fits(*self._example_shape(task, index - self.offsets[task])):
                batches.append(np.array(batch.indices))
                batch = MixedBatch(max_tokens, max_sentences)
            batch.add(index, *self._example_shape(task, index - self.offsets[task]))
            credit += shares
            credit[task] -= 1
            heads[task] = next(streams[task])
        batches.append(np.array(batch.indices))
        with data_utils.numpy_seed(self.seed, epoch, len(self.datasets)):
            batches = [batches[i] for i in np.random.permutation(len(batches))]
        whole = self._steps(len(batches)) * self.num_shards * self.update_freq
        return batches + [np.zeros(0, dtype=np.int64)] * (whole - len(batches))

    def _example_shape(self, task: int, index: int):
        """(text tokens, positions of each feature slot, decoder tokens) of one example."""
        dataset = self.datasets[task]
        features = dataset.feature_sizes[index]
        return (int(dataset.src_sizes[index] - features.sum()), features.tolist(),
                int(dataset.tgt_sizes[index]))


class MixedBatch:
    """A mixed batch being filled: its padded size is rows x the widest text plus, for each
    feature slot index, the widest of the rows' slots there (the encoder places feature
    slot k of every row in one block), or rows x the widest target if larger."""

    def __init__(self, max_tokens: Optional[int], max_sentences: Optional[int]):
        self.max_tokens = max_tokens or math.inf
        self.max_sentences = max_sentences or math.inf
        self.indices: List[int] = []
        self.text, self.features, self.target = 0, [], 0

    def _padded(self, text: int, features: List[int], target: int) -> int:
        widths = [max(a, b) for a, b in itertools.zip_longest(self.features, features,
                                                               fillvalue=0)]
        encoder = max(self.text, text) + sum(widths)
        return (len(self.indices) + 1) * max(encoder, max(self.target, target))

    def fits(self, text: int, features: List[int], target: int) -> bool:
        return not self.indices or (len(self.indices) + 1 <= self.max_sentences
                                    and self._padded(text, features, target) <= self.max_tokens)

    def add(self, index: int, text: int, features: List[int], target: int) -> None:
        self.indices.append(index)
        self.text, self.target = max(self.text, text), max(self.target, target)
        self.features = [max(a, b) for a, b in itertools.zip_longest(self.features, features,
                                                                     fillvalue=0)]
