"""A FairseqDataset that turns table rows into encoder/decoder inputs following a task
plan (``example_builder.py`` asks each slot's modality what its cell means).

Opening the dataset scans every row once: it checks that each column the instruction
names is present with a usable value (errors name file, line and column), and records
sizes so that ``--max-tokens`` batching, ordering and size filtering work as in any
fairseq task. Where nothing but the sizes is needed (training, inference), they are kept
in the index cache (``index_cache.py``): later starts map them instead of scanning. Items
are then built on demand from ``table[index]`` (in DataLoader workers).
"""
import logging
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from ..decoding.label_trie import ClosedSet
from ..instruction import Slot
from ..modalities import get_modality
from ..modalities.base import CONTINUOUS
from ..plan import TaskPlan
from .example_builder import Example, ExampleBuilder
from .exit_guard import built_before_exit
from .features import collate_features
from .index_cache import cached_index, fingerprint
from .row_scan import RowScan, scan_rows
from .table import DataError, InMemoryTable, InvalidRows, as_tables, split_name
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)


class InstructionDataset(FairseqDataset):
    """Args:
        table: rows (``Table``, ``TarShard`` or ``InMemoryTable``), or the tables of one
            subset's shards (their rows one after the other).
        plan: the task plan with columns bound.
        vocab: the shared vocabulary.
        settings: run settings per modality name (``Modality.settings``).
        closed_set: labels of the target if it is ``closed_set``.
        train: sample templates and apply noise and augmentation.
        with_target: rows carry the target column (False for inference).
        seed: base seed; item randomness is a function of (seed, epoch, index).
        skip_invalid_rows: skip bad rows (and report the count) instead of raising.
        decode_all: decode every cell in full while scanning (a validation pass: every
            image decoded); otherwise heavy cells are first decoded when their batch is
            built.
        cached: keep each file's scan (its sizes) in the index cache where nothing else is
            needed (a ``Table``, no references to collect, no ``decode_all``).
        cache_dir: where the index cache lives (default: beside the data file).
        scan_workers: processes that scan a large file (``row_scan.py``; 1: this one).
    """

    def __init__(self, table, plan: TaskPlan, vocab: Vocabulary,
                 settings: Mapping[str, Mapping[str, Any]],
                 closed_set: Optional[ClosedSet] = None, train: bool = False,
                 with_target: bool = True, seed: int = 1, skip_invalid_rows: bool = False,
                 decode_all: bool = False, cached: bool = False,
                 cache_dir: Optional[str] = None, scan_workers: int = 1):
        self.tables = as_tables(table)
        self.name = split_name([t.path for t in self.tables])
        self.plan, self.vocab, self.closed_set = plan, vocab, closed_set
        self.train, self.with_target, self.seed = train, with_target, seed
        self.epoch, self.scan_workers = 1, scan_workers
        self.dictionary = vocab.dictionary
        if plan.target.has("closed_set") and closed_set is None:
            raise ValueError("a closed_set target needs its label set")
        # one builder per file: its errors name that file, its paths resolve beside it
        self.builders = [ExampleBuilder(plan, vocab, settings, closed_set, t.path, t.base_dir,
                                        train, with_target) for t in self.tables]
        self.references: List[Any] = []  # every row's reference, for corpus metrics
        self.invalid_rows: List[DataError] = []  # skipped (--skip-invalid-rows), when scanned
        key = fingerprint(plan.templates, vocab.state_dict(), settings,
                          closed_set.labels if closed_set else None, train, with_target,
                          skip_invalid_rows)
        parts, errors = [], []
        for shard in range(len(self.tables)):
            try:
                parts.append(self._index(shard, key, skip_invalid_rows, decode_all, cached,
                                         cache_dir))
            except DataError as error:  # every file's bad rows, reported together
                errors.extend(getattr(error, "errors", [error]))
        if errors:
            raise errors[0] if len(errors) == 1 else InvalidRows(errors, self.name)
        arrays = [a for a, _ in parts]
        self._report([info for _, info in parts])
        if not sum(len(a["rows"]) for a in arrays):
            raise DataError("no usable rows", self.name)
        # where each file's examples start: example i is row rows[i] of file shard_of(i)
        self.starts = np.cumsum([0] + [len(a["rows"]) for a in arrays])
        self.rows, self.src_sizes, self.tgt_sizes, self.feature_sizes = (
            arrays[0][name] if len(arrays) == 1 else np.concatenate([a[name] for a in arrays])
            for name in ("rows", "src_sizes", "tgt_sizes", "feature_sizes"))

    # -- scanning ------------------------------------------------------------
    def _index(self, shard: int, key: str, skip_invalid_rows: bool, decode_all: bool,
               cached: bool, cache_dir: Optional[str]):
        """File ``shard``'s examples: its cached scan where one may be kept, else a scan."""
        table = self.tables[shard]
        scan = lambda: self._scan(shard, skip_invalid_rows, decode_all)  # noqa: E731
        needs_scan = decode_all or (self.with_target and not self.train) or \
            isinstance(table, InMemoryTable)
        if not cached or needs_scan:
            return scan()
        index = cached_index(table.path, f"examples.{key[:16]}", key, scan, cache_dir)
        if not index.built:
            logger.info(f"{table.path}: {len(index.arrays['rows'])} examples' sizes from the "
                        f"index cache (no scan)")
        return index.arrays, index.info

    def _scan(self, shard: int, skip_invalid_rows: bool, decode_all: bool):
        """Check every row of file ``shard`` and record its sizes (``self.scan_workers``
        processes); all bad rows are reported at once. Returns the arrays and what
        ``_report`` logs."""
        table = self.tables[shard]
        scan = scan_rows(lambda start, stop: self._scan_chunk(shard, start, stop, decode_all),
                         len(table), self.scan_workers, table.path)
        if scan.errors and not skip_invalid_rows:
            raise (scan.errors[0] if len(scan.errors) == 1
                   else InvalidRows(scan.errors, table.path))
        self.invalid_rows += scan.errors
        self.references += scan.references
        return ({"rows": scan.rows, "src_sizes": scan.src_sizes, "tgt_sizes": scan.tgt_sizes,
                 "feature_sizes": scan.feature_sizes},
                {"skipped": len(scan.errors),
                 "first_skipped": str(scan.errors[0]) if scan.errors else None,
                 "notes": dict(sorted(scan.notes.items()))})

    def _scan_chunk(self, shard: int, start: int, stop: int, decode_all: bool) -> RowScan:
        """Rows ``start .. stop`` of file ``shard``: checked, sized (see ``_scan``)."""
        table, builder = self.tables[shard], self.builders[shard]
        rows, src_sizes, tgt_sizes, feature_sizes, references, errors = [], [], [], [], [], []
        for ctx in builder.contexts.values():
            ctx.notes.clear()
        for index in range(start, stop):
            try:
                row = table[index]
                line = table.line_number(index)
                values: Dict[Slot, Any] = {}  # alternatives share slots: read each once
                shapes = [builder.shape(builder.read(row, t, line, decode_all, values), t)
                          for t in self.plan.templates]
            except DataError as error:
                errors.append(error)
                continue
            rows.append(index)
            src_sizes.append(max(s.text + sum(s.features) for s in shapes))
            tgt_sizes.append(max(s.decoder for s in shapes))
            feature_sizes.append(shapes[0].features)  # alternatives read the same feature slots
            if self.with_target and not self.train:
                references.append(builder.reference(values, self.plan.templates[0]))
        width = len(self.plan.templates[0].feature_slots)
        return RowScan(np.array(rows, dtype=np.int32), np.array(src_sizes, dtype=np.int32),
                       np.array(tgt_sizes, dtype=np.int32),
                       np.array(feature_sizes, dtype=np.int32).reshape(len(rows), width),
                       references, errors,
                       sum((ctx.notes for ctx in builder.contexts.values()), Counter()))

    def _report(self, infos: Sequence[Mapping[str, Any]]) -> None:
        """Log what the scans skipped (--skip-invalid-rows) and the modalities' notes,
        totalled over the files."""
        skipped = sum(info["skipped"] for info in infos)
        if skipped:
            first = next(info["first_skipped"] for info in infos if info["skipped"])
            logger.warning(f"skipped {skipped} invalid rows of {self.name} "
                           f"(--skip-invalid-rows); first: {first}")
        notes: Dict[str, int] = {}
        for info in infos:
            for note, count in info["notes"].items():
                notes[note] = notes.get(note, 0) + count
        for note, count in notes.items():
            logger.info(f"{self.name}: {count} {note}")

    @property
    def streamable(self) -> bool:
        """Its files can be read from start to end as a stream (WebDataset shards)."""
        return all(hasattr(table, "stream_rows") for table in self.tables)

    def _locate(self, index: int):
        """Example ``index``'s file and row there."""
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, int(self.rows[index])

    # -- FairseqDataset contract ---------------------------------------------
    def __getitem__(self, index: int) -> Example:
        shard, row_index = self._locate(index)
        table = self.tables[shard]
        return self.example(index, table[row_index], table.line_number(row_index))

    @built_before_exit
    def example(self, index: int, row: Mapping[str, Any], line) -> Example:
        """Example ``index`` from its ``row`` (read by a stream rather than by index)."""
        builder = self.builders[self._locate(index)[0]]
        if not self.train:
            return builder.build(row, self.plan.templates[0], line, index=index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        template = self.plan.templates[int(rng.integers(len(self.plan.templates)))]
        return builder.build(row, template, line, rng,
                                  augmentation_seed(self.seed, self.epoch, index), index)

    def __len__(self) -> int:
        return len(self.rows)

    def num_tokens(self, index: int) -> int:
        return int(max(self.src_sizes[index], self.tgt_sizes[index]))

    def num_tokens_vec(self, indices):
        return np.maximum(self.src_sizes[indices], self.tgt_sizes[indices])

    def size(self, index: int):
        return (int(self.src_sizes[index]), int(self.tgt_sizes[index]))

    @property
    def sizes(self):
        return np.vstack((self.src_sizes, self.tgt_sizes)).T

    def ordered_indices(self):
        # Shuffled (fairseq seeds numpy per epoch), then stably sorted by num_tokens, the
        # size batch_by_size fills --max-tokens with, ties by target length (decoder
        # positions cost more: cross-attention, output projection). Sorting by source then
        # target length (LanguagePairDataset) pads more: see benchmarks/train_speed.py.
        indices = np.random.permutation(len(self)) if self.train else np.arange(len(self))
        indices = indices[np.argsort(self.tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.num_tokens_vec(indices), kind="mergesort")]

    def filter_indices_by_size(self, indices, max_sizes):
        return data_utils.filter_paired_dataset_indices_by_size(
            self.src_sizes, self.tgt_sizes, indices, max_sizes)

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None,
                      required_batch_size_multiple=1):
        """fairseq's batching, keeping the last batch: ``data_utils.batch_by_size``
        drops it when its size is not a multiple of ``--required-batch-size-multiple``
        (8 by default; fairseq issue #5036), which silently loses validation and test rows."""
        batches = super().batch_by_size(indices, max_tokens, max_sentences,
                                        required_batch_size_multiple)
        batched = sum(len(b) for b in batches)
        if batched < len(indices):  # batches cover a prefix of ``indices``, in order
            batches = list(batches) + [np.asarray(indices[batched:], dtype=np.int64)]
        return batches

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return not self.train  # training items change with the epoch (noise, templates)

    @built_before_exit
    def collater(self, examples: Sequence[Example]) -> Dict[str, object]:
        if not examples:
            return {}
        pad = self.dictionary.pad()
        sources = [torch.tensor(e.source) for e in examples]
        batch = {
            "id": torch.tensor([e.id for e in examples]),
            "nsentences": len(examples),
            "net_input": {
                "src_tokens": data_utils.collate_tokens(sources, pad),
                "src_lengths": torch.tensor([len(s) for s in sources]),
            },
            "decoder_prefix": self._collate_prefixes(examples),
            "closed_set": self.closed_set,
            "target_slot": self.plan.target,
            "output_context": [e.output_context for e in examples],
            "data_path": self.name,  # names the subset for corpus-level metrics
        }
        features = collate_features([e.features for e in examples])
        if features:
            batch["net_input"]["features"] = features
        if get_modality(self.plan.target.modality).output_kind == CONTINUOUS:
            self._collate_frames(examples, batch)
        else:
            self._collate_target_tokens(examples, batch)
        if self.with_target:
            batch["references"] = [e.reference for e in examples]
        return batch

    def _collate_target_tokens(self, examples, batch) -> None:
        """The decoder reads end of sentence, the forced prefix and the target, and learns
        the target then end of sentence (the prefix is padding there: no loss)."""
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        batch["net_input"]["prev_output_tokens"] = data_utils.collate_tokens(
            [torch.tensor([eos] + e.prefix + (e.target_input or [])) for e in examples], pad)
        batch["ntokens"] = 0
        if self.with_target:
            batch["target"] = data_utils.collate_tokens(
                [torch.tensor([pad] * len(e.prefix) + e.target + [eos]) for e in examples], pad)
            batch["ntokens"] = int(batch["target"].ne(pad).sum())
            if self.closed_set is not None:
                batch["closed_set_steps"] = self._closed_set_steps(examples, batch["target"])

    def _collate_frames(self, examples, batch) -> None:
        """A continuous target: the decoder reads end of sentence, the forced prefix, then
        the target's frames but the last (through the output head's pre-net, at placeholder
        tokens); the state at position prefix + j predicts frame j and whether it is the
        last. ``target_frames`` holds those positions (of the flattened ``B x L`` decoder
        states), the frames, the stop flags and each frame's row."""
        pad, eos, placeholder = self.dictionary.pad(), self.dictionary.eos(), self.dictionary.unk()
        frames = [e.target for e in examples] if self.with_target else [None] * len(examples)
        prev = data_utils.collate_tokens([torch.tensor(
            [eos] + e.prefix + [placeholder] * (0 if f is None else len(f) - 1))
            for e, f in zip(examples, frames)], pad)
        batch["net_input"]["prev_output_tokens"] = prev
        batch["ntokens"] = 0
        if not self.with_target:
            return
        width, frame_dim = prev.size(1), frames[0].size(1)
        inputs = torch.zeros(len(examples), width, frame_dim)
        is_frame = torch.zeros(len(examples), width, dtype=torch.bool)
        positions, stops, rows = [], [], []
        for row, (e, f) in enumerate(zip(examples, frames)):
            start = len(e.prefix)
            inputs[row, start + 1:start + len(f)] = f[:-1]
            is_frame[row, start + 1:start + len(f)] = True
            positions.append(row * width + start + torch.arange(len(f)))
            stops.append(torch.arange(len(f)).eq(len(f) - 1).float())  # 1 on the last
            rows.append(torch.full((len(f),), row))
        batch["net_input"]["decoder_frames"] = {"modality": self.plan.target.modality,
                                                "frames": inputs, "mask": is_frame}
        batch["target_frames"] = {"positions": torch.cat(positions), "frames": torch.cat(frames),
                                  "stop": torch.cat(stops), "rows": torch.cat(rows)}
        batch["ntokens"] = len(batch["target_frames"]["rows"])

    def _collate_prefixes(self, examples) -> Optional[torch.Tensor]:
        if not any(e.prefix for e in examples):
            return None
        return data_utils.collate_tokens([torch.tensor(e.prefix or [self.dictionary.pad()])
                                          for e in examples], self.dictionary.pad())

    def _closed_set_steps(self, examples, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """For each target position of a closed-set label: the tokens the label set
        allows there. Positions index the flattened ``B x T`` target; allowed ids are
        padded with -1 to the widest branching (no dense vocabulary masks)."""
        positions, allowed = [], []
        width = target.size(1)
        for row, e in enumerate(examples):
            label = list(e.target)
            for step in range(len(label) + 1):
                positions.append(row * width + len(e.prefix) + step)
                allowed.append(self.closed_set.trie.allowed(label[:step]))
        k = max(len(a) for a in allowed)
        allowed_ids = torch.full((len(allowed), k), -1, dtype=torch.long)
        for i, ids in enumerate(allowed):
            allowed_ids[i, :len(ids)] = torch.tensor(ids)
        return {"positions": torch.tensor(positions), "allowed": allowed_ids}


def augmentation_seed(*entropy: int) -> int:
    """A torch seed for an item's augmentations, a pure function of ``entropy``."""
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
