"""A FairseqDataset that turns table rows into encoder/decoder token sequences
following a task plan.

Opening the dataset scans every row once: it checks that each column the
instruction names is present with a usable value (errors name file, line and
column), checks closed-set labels, and records sizes so that ``--max-tokens``
batching, ordering and size filtering work as in any fairseq task. Items are
then built on demand from ``table[index]`` (in DataLoader workers).
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from ..decoding.label_trie import LabelTrie
from ..instruction import Slot
from ..models.adapters.image import DEFAULT_GEOMETRY, ImageGeometry
from ..plan import TaskPlan, TemplatePlan
from .table import DataError, InvalidRows
from .text import mask_spans, normalize_text, replace_random_tokens, text_value
from .visual_inputs import NO_VISUAL_INPUTS, VisualInputs, VisualReader, augmentation_seed
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClosedSet:
    """The labels a closed-set target may take, and their token trie.

    (A dataclass, not a NamedTuple: fairseq's ``apply_to_sample`` rebuilds tuples.)"""

    labels: Tuple[str, ...]
    trie: LabelTrie
    label_of: Dict[Tuple[int, ...], str]  # token ids -> label text

    @classmethod
    def build(cls, labels: Sequence[str], vocab: Vocabulary) -> "ClosedSet":
        labels = tuple(dict.fromkeys(labels))
        sequences = [tuple(vocab.encode(label)) for label in labels]
        return cls(labels, LabelTrie(sequences, vocab.dictionary.eos()),
                   dict(zip(sequences, labels)))


class Example(NamedTuple):
    id: int
    source: List[int]
    prefix: List[int]  # forced decoder tokens, no loss
    target: Optional[List[int]]  # None when rows have no target (inference)
    target_input: Optional[List[int]]  # what the decoder reads for the target (maybe noisy)
    reference: object  # target text, or a BOX target's pixel box; None without target
    images: Dict[str, List[torch.Tensor]]  # adapter key -> 3 x S x S uint8 per IMAGE slot
    original_size: Optional[Tuple[int, int]]  # (width, height) of the image boxes refer to


class InstructionDataset(FairseqDataset):
    """Args:
        table: rows (``Table`` or ``InMemoryTable``).
        plan: the task plan with columns bound.
        vocab: the shared vocabulary.
        closed_set: labels of the target if it is ``closed_set``.
        train: sample templates and apply noise (``mask_ratio``, ``noise_ratio``).
        with_target: rows carry the target column (False for inference).
        seed: base seed; item randomness is a function of (seed, epoch, index).
        skip_invalid_rows: skip bad rows (and report the count) instead of raising.
        geometry: image size and patch sizes (IMAGE slots count their patches in
            the source size, which ``--max-tokens`` budgets).
        image_adaptor: adaptor of IMAGE slots without ``adaptor=``.
        decode_images: decode every image while scanning (a full validation pass);
            otherwise images are first decoded when their batch is built.
    """

    def __init__(self, table, plan: TaskPlan, vocab: Vocabulary,
                 closed_set: Optional[ClosedSet] = None, train: bool = False,
                 with_target: bool = True, seed: int = 1, skip_invalid_rows: bool = False,
                 geometry: ImageGeometry = DEFAULT_GEOMETRY, image_adaptor: str = "resnet",
                 decode_images: bool = False):
        self.table, self.plan, self.vocab, self.closed_set = table, plan, vocab, closed_set
        self.train, self.with_target, self.seed = train, with_target, seed
        self.epoch = 1
        self.dictionary = vocab.dictionary
        if plan.target.has("closed_set") and closed_set is None:
            raise ValueError("a closed_set target needs its label set")
        self.visual = VisualReader(geometry, image_adaptor, vocab.num_bins, table.base_dir,
                                   table.path, train, with_target)
        self.references: List[object] = []  # every row's reference, for corpus metrics
        self.rows, self.src_sizes, self.tgt_sizes = self._scan(skip_invalid_rows, decode_images)

    # -- scanning ------------------------------------------------------------
    def _scan(self, skip_invalid_rows: bool, decode_images: bool):
        """Check every row and record its sizes; all bad rows are reported at once."""
        rows, src_sizes, tgt_sizes, errors = [], [], [], []
        for index in range(len(self.table)):
            try:
                row = self.table[index]
                line = self.table.line_number(index)
                # alternatives share their images (plan.py): decode them once
                size = (self.visual.decoded_size(row, self.plan.templates[0], line)
                        if decode_images else None)
                sizes = [self._build(row, t, None, index, self.visual.check(row, t, line, size))
                         for t in self.plan.templates]
            except DataError as error:
                errors.append(error)
                continue
            rows.append(index)
            src_sizes.append(max(len(e.source) + self.visual.num_patches(t)
                                 for e, t in zip(sizes, self.plan.templates)))
            tgt_sizes.append(max(len(e.prefix) + len(e.target or []) + 1 for e in sizes))
            if self.with_target and not self.train:
                self.references.append(sizes[0].reference)
        if errors and not skip_invalid_rows:
            raise errors[0] if len(errors) == 1 else InvalidRows(errors, self.table.path)
        if errors:
            logger.warning(f"skipped {len(errors)} invalid rows of {self.table.path} "
                           f"(--skip-invalid-rows); first: {errors[0]}")
        self.invalid_rows: List[DataError] = errors  # skipped (--skip-invalid-rows)
        if not rows:
            raise DataError("no usable rows", self.table.path)
        return np.array(rows), np.array(src_sizes), np.array(tgt_sizes)

    # -- building one example -----------------------------------------------
    def _build(self, row: Dict[str, object], template: TemplatePlan,
               rng: Optional[np.random.Generator], index: int = -1,
               visual: VisualInputs = NO_VISUAL_INPUTS) -> Example:
        line = self.table.line_number(index) if index >= 0 else None
        source = [tok for part in template.encoder
                  for tok in self._part_tokens(part, row, rng, line, visual)]
        prefix = [tok for part in template.prefix
                  for tok in self._part_tokens(part, row, None, line, visual)]
        bos, eos = self.dictionary.bos(), self.dictionary.eos()
        example = Example(index, [bos] + source + [eos], prefix, None, None, None,
                          visual.images, visual.original_size)
        if not self.with_target:
            return example
        target_slot = template.target
        if target_slot.modality == "BOX":
            target = self._box_tokens(visual, target_slot)
            return example._replace(target=target, target_input=target,
                                    reference=visual.boxes[target_slot])
        return self._with_text_target(example, row, target_slot, rng, line)

    def _with_text_target(self, example: Example, row, target_slot: Slot, rng, line) -> Example:
        text = normalize_text(self._value(row, target_slot, line), target_slot)
        target = self._truncate(self.vocab.encode(text), target_slot)
        reference = self.vocab.decode(target)
        target_input = target
        if rng is not None and target_slot.get("noise_ratio"):
            # the decoder reads a noisy copy of its target; the loss sees the clean one
            target_input = replace_random_tokens(target, target_slot.get("noise_ratio"),
                                                 self.vocab.subword_ids, rng)
        if self.closed_set is not None:
            if tuple(target) not in self.closed_set.label_of:
                raise DataError(f"'{text}' is not one of the {len(self.closed_set.labels)} "
                                f"closed-set labels of this task", self.table.path, line,
                                target_slot.column)
            reference = self.closed_set.label_of[tuple(target)]
        return example._replace(target=target, target_input=target_input, reference=reference)

    def _part_tokens(self, part, row, rng, line, visual: VisualInputs) -> List[int]:
        if isinstance(part, str):
            return self.vocab.encode(normalize_text(part))
        if part.modality == "BOX":
            return self._box_tokens(visual, part)
        if part.modality == "IMAGE":
            return []  # patches come from the image adapter, ahead of the text
        tokens = self._truncate(self.vocab.encode(normalize_text(self._value(row, part, line),
                                                                 part)), part)
        if rng is not None:
            if part.get("mask_ratio"):
                tokens = mask_spans(tokens, part.get("mask_ratio"), self.vocab.mask_index, rng)
            if part.get("noise_ratio"):
                tokens = replace_random_tokens(tokens, part.get("noise_ratio"),
                                               self.vocab.subword_ids, rng)
        return tokens

    def _box_tokens(self, visual: VisualInputs, slot: Slot) -> List[int]:
        return [self.vocab.bin_index(k) for k in visual.box_bins[slot]]

    def _value(self, row: Dict[str, object], slot: Slot, line: Optional[int]) -> str:
        return text_value(row, slot, self.table.path, line)

    @staticmethod
    def _truncate(tokens: List[int], slot: Slot) -> List[int]:
        limit = slot.get("max_length")
        return tokens[:limit] if limit else tokens

    # -- FairseqDataset contract ---------------------------------------------
    def __getitem__(self, index: int) -> Example:
        row_index = int(self.rows[index])
        row = self.table[row_index]
        line = self.table.line_number(row_index)
        if not self.train:
            template = self.plan.templates[0]
            visual = self.visual.read(row, template, line)
            return self._build(row, template, None, row_index, visual)._replace(id=index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        template = self.plan.templates[int(rng.integers(len(self.plan.templates)))]
        visual = self.visual.read(row, template, line,
                                  augmentation_seed(self.seed, self.epoch, index))
        return self._build(row, template, rng, row_index, visual)._replace(id=index)

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
        # like LanguagePairDataset: shuffled (fairseq seeds numpy per epoch), then
        # stably sorted by target then source length for tight batches
        indices = np.random.permutation(len(self)) if self.train else np.arange(len(self))
        indices = indices[np.argsort(self.tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.src_sizes[indices], kind="mergesort")]

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

    def collater(self, examples: Sequence[Example]) -> Dict[str, object]:
        if not examples:
            return {}
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        sources = [torch.tensor(e.source) for e in examples]
        decoder_inputs, targets, references = [], [], []
        for e in examples:
            decoder_inputs.append(torch.tensor([eos] + e.prefix + (e.target_input or [])))
            if e.target is not None:
                targets.append(torch.tensor([pad] * len(e.prefix) + e.target + [eos]))
                references.append(e.reference)
        batch = {
            "id": torch.tensor([e.id for e in examples]),
            "nsentences": len(examples),
            "net_input": {
                "src_tokens": data_utils.collate_tokens(sources, pad),
                "src_lengths": torch.tensor([len(s) for s in sources]),
                "prev_output_tokens": data_utils.collate_tokens(decoder_inputs, pad),
            },
            "decoder_prefix": self._collate_prefixes(examples),
            "closed_set": self.closed_set,
            "target_modality": self.plan.target.modality,
            "data_path": self.table.path,  # names the subset for corpus-level metrics
        }
        if examples[0].images:  # every example has the same IMAGE slots (see plan.py)
            batch["net_input"].update(collate_images([e.images for e in examples]))
            batch["image_sizes"] = torch.tensor([e.original_size for e in examples])
        if targets:
            batch["target"] = data_utils.collate_tokens(targets, pad)
            batch["ntokens"] = int(batch["target"].ne(pad).sum())
            batch["references"] = references
            if self.closed_set is not None:
                batch["closed_set_steps"] = self._closed_set_steps(examples, batch["target"])
        else:
            batch["ntokens"] = 0
        return batch

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


def collate_images(rows: Sequence[Dict[str, List[torch.Tensor]]]) -> Dict[str, object]:
    """``net_input`` entries for the rows' images, per adapter key: ``images`` stacks all
    of them (``N x 3 x S x S``) and ``image_slots`` says where each goes (``N x 2``: row,
    slot). Rows without images of a key have none there: no placeholder pixels."""
    images, slots = {}, {}
    for key in dict.fromkeys(key for row in rows for key in row):
        placed = [(r, k, pixels) for r, row in enumerate(rows)
                  for k, pixels in enumerate(row.get(key, ()))]
        images[key] = torch.stack([pixels for _, _, pixels in placed])
        slots[key] = torch.tensor([(r, k) for r, k, _ in placed])
    return {"images": images, "image_slots": slots}
