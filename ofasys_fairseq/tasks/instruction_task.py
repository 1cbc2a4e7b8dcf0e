"""``--task instruction``: any instruction, trained and decoded with fairseq's tools.

Life cycle of the vocabulary (one shared dictionary, see ``data/vocabulary.py``):
* training from scratch: built from the training subset on first use;
* resuming (``checkpoint_last.pt`` or ``--restore-file`` exists): read from
  that checkpoint's task state, so the token ids never change under a model;
* decoding / Python API: ``load_state_dict`` fills it from the checkpoint.
``target_dictionary`` is one object for the task's life, filled in place,
because fairseq-generate takes it before the checkpoint is read.
"""
import argparse
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from fairseq.data import Dictionary
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..data.index_cache import cached_index, fingerprint
from ..data.instruction_dataset import InstructionDataset
from ..data.row_scan import scan_workers
from ..data.stream_batches import StreamEpochIterator, StreamLayout, StreamPlan
from ..data.table import (DataError, Table, as_tables, find_split_files, located, open_table,
                          required_cell)
from ..data.vocabulary import (MASK_SYMBOL, Vocabulary, default_cache_dir, load_sentencepiece,
                               normalize_whitespace, train_sentencepiece)
from ..decoding.frame_generator import FrameGenerator
from ..decoding.label_trie import ClosedSet
from ..decoding.restricted_generator import Restriction, RestrictedSequenceGenerator
from ..instruction import Slot
from ..modalities import (Context, Corpus, ModalityTaskOptions, get_modality,
                          registered_modalities)
from ..modalities.base import CONTINUOUS, TOKENS
from ..plan import TaskPlan
from ..scoring import references as generated_references
from ..scoring.validation_metrics import log_metrics

logger = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 64  # decoded target tokens when the caller names no limit
# task states written before modalities kept their own settings have no format (1)
STATE_FORMAT = 2


class FittedCell(NamedTuple):
    """A training cell that a modality's statistics are fitted on."""

    value: Any  # as the modality read it (not decoded)
    slot: Slot
    path: str
    line: Optional[int]


@dataclass
class InstructionCommonConfig(ModalityTaskOptions):
    """Options shared by ``--task instruction`` and ``--task multitask``: one vocabulary,
    one set of modality settings (``--image-size``, ``--num-bins``, ...) and one
    validation decoding recipe per model."""
    vocab_size: int = field(default=8000, metadata={
        "help": "upper bound on sentencepiece pieces trained from the training data"})
    sentencepiece_model: Optional[str] = field(default=None, metadata={
        "help": "use this sentencepiece .model instead of training one"})
    vocab_sample_rows: int = field(default=200_000, metadata={
        "help": "train the vocabulary on the texts of at most this many training rows, a "
                "sample seeded by --seed (0: every row); closed-set labels always come from "
                "every row"})
    vocab_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "where trained sentencepiece models are cached (default ~/.cache/ofasys_fairseq)"})
    max_source_positions: int = field(default=1024, metadata={"help": "longest encoder input"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest decoder sequence"})
    skip_invalid_rows: bool = field(default=False, metadata={
        "help": "skip rows with missing or bad values (the count is logged) instead of failing"})
    no_eval_metrics: bool = field(default=False, metadata={
        "help": "do not decode during validation (by default it reports the target's "
                "metrics: accuracy for closed_set targets, BLEU for free text, ...)"})
    eval_beam: int = field(default=1, metadata={"help": "beam size for validation decoding"})
    eval_max_len: int = field(default=256, metadata={
        "help": "longest decoded sequence in validation, forced prefix included"})
    data_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "where the data files' index caches live (row offsets and every example's "
                "sizes, built once; default: .ofasys-cache/ beside each data file, or the user "
                "cache directory where that is read-only)"})
    no_data_cache: bool = field(default=False, metadata={
        "help": "scan every data file at every start instead of keeping its index cache"})
    scan_workers: int = field(default=0, metadata={
        "help": "processes that check and size a data file's rows when there is no index "
                "cache to map (its first start, --no-data-cache, validation sets), each "
                "taking 5,000 rows at a time (0: one per CPU core, at most 8; 1: the "
                "training process alone)"})
    validate_data: bool = field(default=False, metadata={
        "help": "decode every cell in full while loading the data (every image decoded, every "
                "box checked against it), reporting all bad rows before training "
                "(ofasys-validate does the same alone)"})
    seed: int = II("common.seed")
    results_path: Optional[str] = II("common_eval.results_path")
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    finetune_from_model: Optional[str] = II("checkpoint.finetune_from_model")


@dataclass
class InstructionConfig(InstructionCommonConfig):
    data: Optional[str] = field(default=None, metadata={
        "help": "directory holding <subset>.jsonl / .tsv / .csv (header line for tsv/csv)"})
    instruction: Optional[str] = field(default=None, metadata={
        "help": "the task, e.g. '[TEXT:src] what is the summary? -> [TEXT:tgt]'; "
                "when decoding a checkpoint it defaults to the trained one"})
    closed_set_labels: Optional[str] = field(default=None, metadata={
        "help": "label files for closed_set columns, 'column=path[,column=path]' (one label per "
                "line, path relative to --data); default: the column's values in the training data"})
    trained_task: Optional[str] = field(default=None, metadata={
        "help": "decode a multitask checkpoint as its task of this name (instruction and labels)"})
    eval_metrics: Optional[str] = field(default=None, metadata={
        "help": "validation metrics, comma-separated (e.g. 'vqa_score,exact_match'; the first "
                "is the main one); default: the target's own (accuracy for closed_set, BLEU for "
                "free text, ...)"})
    stream_buffer: int = field(default=2000, metadata={
        "help": "training on WebDataset .tar shards streams them: the rows each DataLoader "
                "worker holds to shuffle and cut into batches"})
    train_subset: str = II("dataset.train_subset")


@register_task("instruction", dataclass=InstructionConfig)
class InstructionTask(FairseqTask):
    cfg: InstructionConfig

    def __init__(self, cfg: InstructionConfig, plan: Optional[TaskPlan]):
        super().__init__(cfg)
        self.plan = plan
        self.dictionary = Dictionary()
        self.vocab: Optional[Vocabulary] = None
        self.labels: Dict[str, List[str]] = {}  # closed_set column -> labels
        self._closed_sets: Dict[str, ClosedSet] = {}
        self.sequence_generator = None
        self._corpora: Dict[str, Corpus] = {}  # data file -> its references
        # per modality, saved in the checkpoint: image geometry, number of bins, ...
        self.modality_settings: Dict[str, Dict[str, Any]] = {
            m.name: m.settings(cfg) for m in registered_modalities() if m.implemented}
        self.settings_final = False  # planned for the model, or read from a checkpoint
        self.finetuning_from: Optional[str] = None  # --finetune-from-model, once prepared
        self.fitted_cells: List[FittedCell] = []  # what modality statistics are fitted on

    @classmethod
    def setup_task(cls, cfg: InstructionConfig, **kwargs) -> "InstructionTask":
        # Nothing here touches the data: a checkpoint must load without it.
        task = cls(cfg, TaskPlan.parse(cfg.instruction) if cfg.instruction else None)
        if task.plan is not None:
            task.validation_metrics()  # a wrong --eval-metrics fails before training
        return task

    # -- vocabulary and labels -------------------------------------------------
    def prepare(self) -> None:
        """Make the vocabulary and label sets available (build, resume or fail)."""
        if self.vocab is not None:
            return
        resume = self._checkpoint_to_resume()
        if resume is not None:
            logger.info(f"taking the vocabulary and labels from {resume}")
            self.load_state_dict(torch.load(resume, map_location="cpu")["task_state"])
            return
        texts = self.training_texts()
        self.fit_modalities(self.statistics_cells())  # before the vocabulary: its symbols
        self.finetuning_from = self._checkpoint_to_finetune()
        if self.finetuning_from is None:
            self.use_vocabulary(build_vocabulary(self.cfg, texts, self.dictionary,
                                                 self.modality_settings))
        else:
            saved = upgrade_task_state(torch.load(self.finetuning_from, map_location="cpu")
                                       ["task_state"])
            check_finetuning_options(saved["modalities"], self.modality_settings,
                                     self.finetuning_from)
            logger.info(f"fine-tuning {self.finetuning_from}: its vocabulary, extended")
            self.use_vocabulary(extend_vocabulary(saved["vocabulary"], self.cfg, texts,
                                                  self.dictionary, self.modality_settings))

    def training_texts(self) -> List[str]:
        """Read the training subset once: set the closed-set labels and the cells that
        modality statistics are fitted on, and return the texts the vocabulary is trained
        on (instruction literals, labels, each slot's texts)."""
        if self.plan is None:
            raise ValueError("--instruction is required to train (e.g. --instruction "
                             "'[TEXT:src] -> [TEXT:tgt]')")
        if not self.cfg.data:
            raise ValueError("no data directory given (the first positional argument)")
        tables = self.open_subset(self.cfg.data, self.cfg.train_subset)
        plan = self.bind_plan(tables)
        starts = np.cumsum([0] + [len(t) for t in tables])
        rows = np.asarray(sampled_rows(int(starts[-1]), self.cfg.vocab_sample_rows,
                                       self.cfg.seed))
        shard_of = np.searchsorted(starts, rows, side="right") - 1
        self.fitted_cells = []
        texts: Dict[Slot, List[str]] = {}
        for shard, table in enumerate(tables):
            for slot, values in self._scan_training_rows(
                    table, plan, rows[shard_of == shard] - starts[shard]).items():
                texts.setdefault(slot, []).extend(values)
        if len(rows) < starts[-1]:
            logger.info(f"vocabulary texts from {len(rows)} of the {starts[-1]} training rows "
                        f"(--vocab-sample-rows)")
        self.labels = self._collect_labels(plan, texts, tables, every_row=len(rows) == starts[-1])
        return list(self._training_texts(plan, texts))

    def use_vocabulary(self, vocab: Vocabulary) -> None:
        """Encode with ``vocab`` (a multitask run shares one among its tasks)."""
        self.vocab = vocab
        self.dictionary = vocab.dictionary
        self._closed_sets = {}

    def _checkpoint_to_resume(self) -> Optional[str]:
        # mirrors fairseq.checkpoint_utils.load_checkpoint's choice of file
        try:
            restore, save_dir = self.cfg.restore_file, self.cfg.save_dir
        except Exception:  # interpolation unavailable outside fairseq-train
            return None
        if not restore:
            return None
        path = os.path.join(save_dir, restore) if restore == "checkpoint_last.pt" else restore
        return path if os.path.exists(path) else None

    def _checkpoint_to_finetune(self) -> Optional[str]:
        """``--finetune-from-model``, which fairseq starts from when nothing is resumed (a
        path that does not exist: fairseq itself refuses it, naming it)."""
        try:
            path = self.cfg.finetune_from_model
        except Exception:  # interpolation unavailable outside fairseq-train
            return None
        return path if path and os.path.isfile(path) else None

    def bind_plan(self, table) -> TaskPlan:
        """The instruction with its slots bound to the columns of ``table`` (or of each
        of a subset's shards)."""
        tables = as_tables(table)
        plan = self.plan.bind_columns(tables[0].columns)
        for table in tables:
            header = getattr(table, "header", None)
            missing = [c for c in plan.columns() if header is not None and c not in header]
            if missing:
                raise DataError(f"the instruction reads column(s) "
                                f"{', '.join(map(repr, missing))}, but the file's columns "
                                f"are: {', '.join(table.columns)}", table.path)
        return plan

    def _scan_training_rows(self, table, plan: TaskPlan,
                            rows: Sequence[int]) -> Dict[Slot, List[str]]:
        """One pass over training ``rows`` of ``table``: the texts of each slot whose
        modality trains the vocabulary, and the checked cells of slots whose modality fits
        statistics (added to ``self.fitted_cells``). With --skip-invalid-rows unreadable rows are left out (the
        dataset counts and reports them); otherwise the first one fails."""
        slots = list(dict.fromkeys(s for t in plan.templates for s in t.slots))
        text_slots = [s for s in slots if get_modality(s.modality).trains_vocabulary]
        fitted_slots = [s for s in slots if get_modality(s.modality).fits_statistics]
        contexts = {s.modality: Context(None, self.modality_settings[s.modality], None,
                                        table.path, table.base_dir) for s in fitted_slots}
        texts: Dict[Slot, List[str]] = {slot: [] for slot in text_slots}
        for index in map(int, rows):
            try:
                row, line = table[index], table.line_number(index)
                values = [located(lambda: get_modality(slot.modality).vocabulary_texts(
                    required_cell(row, slot, table.path, line), slot, table.base_dir),
                    table.path, line, slot.column) for slot in text_slots]
                fitted = [FittedCell(located(lambda: get_modality(slot.modality).read(
                    required_cell(row, slot, table.path, line), slot,
                    contexts[slot.modality], False), table.path, line, slot.column),
                    slot, table.path, line) for slot in fitted_slots]
            except DataError:
                if not self.cfg.skip_invalid_rows:
                    raise
                continue
            for slot, value in zip(text_slots, values):
                texts[slot].extend(value)
            self.fitted_cells.extend(fitted)
        return texts

    def statistics_cells(self) -> List[FittedCell]:
        """The training cells that modality statistics are fitted on (``training_texts``
        collects them), handed over once: the task keeps none after."""
        cells, self.fitted_cells = self.fitted_cells, []
        return cells

    def fit_modalities(self, cells: Sequence[FittedCell]) -> None:
        """Fit the statistics of each modality that keeps some (feature mean and variance)
        on its training cells, a seeded sample of them where it says so."""
        by_modality: Dict[str, List[FittedCell]] = {}
        for cell in cells:
            by_modality.setdefault(cell.slot.modality, []).append(cell)
        for name, group in by_modality.items():
            modality, settings = get_modality(name), self.modality_settings[name]
            size = modality.statistics_sample_size(settings)
            if 0 < size < len(group):
                chosen = np.random.default_rng(self.cfg.seed).choice(len(group), size,
                                                                     replace=False)
                group = [group[i] for i in sorted(chosen)]
            statistics, skipped = [], 0
            for cell in group:
                try:
                    statistics.append(located(lambda: modality.cell_statistics(
                        cell.value, cell.slot, self.context(name)), cell.path, cell.line,
                        cell.slot.column))
                except DataError:
                    if not self.cfg.skip_invalid_rows:
                        raise
                    skipped += 1
            logger.info(f"{name} statistics fitted on {len(statistics)} training cells"
                        + (f" ({skipped} unreadable skipped, --skip-invalid-rows)"
                           if skipped else ""))
            self.modality_settings[name] = modality.fit(settings, statistics)

    def _collect_labels(self, plan: TaskPlan, texts: Dict[Slot, List[str]],
                        tables: Sequence[Table], every_row: bool) -> Dict[str, List[str]]:
        """The closed-set target's labels: its label file's, else the values of every
        training row (``texts`` when they are every row's, else one pass over the
        target column, kept in the index cache)."""
        target = plan.target
        files = self._label_files(target)
        if not target.has("closed_set"):
            return {}
        if target.column in files:
            path = os.path.join(self.cfg.data, files[target.column])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--closed-set-labels {target.column}="
                                        f"{files[target.column]}: no such file {path}")
            modality = get_modality(target.modality)
            with open(path, encoding="utf-8") as f:
                labels = [modality.label_text(line, target) for line in f if line.strip()]
        elif every_row:
            labels = sorted(set(texts[target]))
        else:
            labels = sorted({label for table in tables
                             for label in self._labels_of_every_row(table, target)})
        logger.info(f"closed set '{target.column}': {len(labels)} labels")
        return {target.column: labels}

    def _labels_of_every_row(self, table: Table, target: Slot) -> List[str]:
        def read_labels():
            modality, labels = get_modality(target.modality), set()
            for index in range(len(table)):
                line = table.line_number(index)
                try:
                    labels.update(located(lambda: modality.vocabulary_texts(
                        required_cell(table[index], target, table.path, line), target,
                        table.base_dir), table.path, line, target.column))
                except DataError:
                    if not self.cfg.skip_invalid_rows:
                        raise
            return {}, {"labels": sorted(labels)}

        if self.cfg.no_data_cache:
            return read_labels()[1]["labels"]
        key = fingerprint(target, self.cfg.skip_invalid_rows)
        return cached_index(table.path, f"labels.{key[:16]}", key, read_labels,
                            self.cfg.data_cache_dir).info["labels"]

    def _label_files(self, target) -> Dict[str, str]:
        """``--closed-set-labels`` as column -> path; every column must be the target."""
        files = {}
        for item in filter(None, (self.cfg.closed_set_labels or "").split(",")):
            column, sep, path = (part.strip() for part in item.partition("="))
            if not (sep and column and path):
                raise ValueError(f"--closed-set-labels: expected 'column=path', got {item!r}")
            files[column] = path
        expected = {target.column} if target.has("closed_set") else set()
        if set(files) - expected:
            raise ValueError(
                f"--closed-set-labels names column(s) {sorted(set(files) - expected)}, but the "
                f"instruction's closed_set target is {sorted(expected) or 'absent'}")
        return files

    def _training_texts(self, plan: TaskPlan, texts: Dict[Slot, List[str]]):
        literals = {normalize_whitespace(p) for t in plan.templates
                    for p in t.encoder + t.prefix if isinstance(p, str)}
        yield from sorted(literals)
        for labels in self.labels.values():
            yield from labels
        for slot_texts in texts.values():  # dict order: slots in instruction order
            yield from slot_texts

    # -- modality settings -------------------------------------------------------------
    def planned_slots(self) -> List[Slot]:
        """Every slot of the instruction(s) this task trains."""
        return [s for t in self.plan.templates for s in t.slots] if self.plan else []

    def plan_modalities(self) -> None:
        """Complete each modality's settings with what the planned slots need (the
        adapters the model builds), once, before the model is first built; a checkpoint
        brings them complete."""
        slots = self.planned_slots()
        if self.settings_final:  # a checkpoint's: can they serve this instruction?
            for name, settings in self.modality_settings.items():
                get_modality(name).check_settings(settings,
                                                  [s for s in slots if s.modality == name])
            return
        for name, settings in self.modality_settings.items():
            self.modality_settings[name] = get_modality(name).plan_settings(
                settings, [s for s in slots if s.modality == name])
        self.settings_final = True

    def context(self, modality: str, closed_set: Optional[ClosedSet] = None) -> Context:
        """What ``modality`` needs to handle slots of this run."""
        return Context(self.vocab, self.modality_settings.get(modality, {}), closed_set)

    # -- labels ------------------------------------------------------------------------
    def closed_set(self, column: str) -> ClosedSet:
        if column not in self._closed_sets:
            if column not in self.labels:
                raise ValueError(f"no closed-set labels for column '{column}': the checkpoint "
                                 f"has labels for {sorted(self.labels) or 'no column'}")
            self._closed_sets[column] = ClosedSet.build(self.labels[column], self.vocab.encode,
                                                        self.dictionary.eos())
        return self._closed_sets[column]

    def add_labels(self, column: str, labels: Sequence[str]) -> None:
        """Give a closed_set column its label set (e.g. for a zero-shot instruction)."""
        self.labels[column] = list(dict.fromkeys(labels))
        self._closed_sets.pop(column, None)

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, object]:
        if self.vocab is None:
            return {}
        return {"format": STATE_FORMAT, "instruction": self.plan.text,
                "vocabulary": self.vocab.state_dict(), "labels": self.labels,
                "modalities": self.modality_settings}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        if not state:
            return
        state = upgrade_task_state(state)
        if "tasks" in state:
            state = self._trained_task_state(state)
        self.use_checkpoint_vocabulary(state["vocabulary"])
        self.labels = dict(state["labels"])
        self.use_checkpoint_settings(state["modalities"])
        self._closed_sets = {}
        if self.plan is None:
            self.plan = TaskPlan.parse(state["instruction"])

    def use_checkpoint_vocabulary(self, vocabulary: Mapping[str, Any]) -> None:
        if self.vocab is None:
            self.use_vocabulary(Vocabulary.from_state_dict(vocabulary, self.dictionary))
        elif list(self.dictionary.symbols) != list(vocabulary["symbols"]):
            raise ValueError("the checkpoint's vocabulary differs from the one built for this run")

    def use_checkpoint_settings(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        """The checkpoint's modality settings, in place (multitask members share them)."""
        for name, saved in settings.items():
            current = self.modality_settings.get(name)
            run_options = get_modality(name).run_options if current is not None else ()
            self.modality_settings[name] = {**saved, **{key: current[key] for key in run_options
                                                        if key in current}}
        self.settings_final = True

    def _trained_task_state(self, state: Dict[str, object]) -> Dict[str, object]:
        """A multitask checkpoint's state, narrowed to its task ``--trained-task``."""
        tasks = state["tasks"]
        name = self.cfg.trained_task
        if name not in tasks:
            problem = (f"--trained-task {name!r} is not one of its tasks" if name
                       else "name one of its tasks with --trained-task")
            raise ValueError(f"this is a multitask checkpoint: {problem} ({', '.join(tasks)})")
        return {**tasks[name], "vocabulary": state["vocabulary"],
                "modalities": state["modalities"]}

    @property
    def source_dictionary(self) -> Dictionary:
        return self.dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self.dictionary

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    # -- data --------------------------------------------------------------------
    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        self.prepare()
        tables = self.open_subset(self.cfg.data, split)
        dataset = self.dataset_for(tables, self.bind_plan(tables), with_target=True,
                                   train=split == self.cfg.train_subset)
        self.datasets[split] = dataset
        logger.info(f"{split}: {len(dataset)} examples from {dataset.name}")

    def open_subset(self, data_dir: str, subsets: Union[str, Sequence[str]]) -> List[Table]:
        """The data files of ``subsets`` (one name or glob, or a list of them) in
        ``data_dir``: each file's row index cached unless --no-data-cache."""
        names = [subsets] if isinstance(subsets, str) else list(subsets)
        return [open_table(path, cached=not self.cfg.no_data_cache,
                           cache_dir=self.cfg.data_cache_dir)
                for name in names for path in find_split_files(data_dir, name)]

    def dataset_for(self, table, plan: TaskPlan, with_target: bool,
                    train: bool = False) -> InstructionDataset:
        self.prepare()
        target = plan.target
        closed_set = self.closed_set(target.column) if target.has("closed_set") else None
        dataset = InstructionDataset(table, plan, self.vocab, self.modality_settings,
                                     closed_set, train=train, with_target=with_target,
                                     seed=self.cfg.seed,
                                     skip_invalid_rows=self.cfg.skip_invalid_rows,
                                     # a pass over data files, not over inference rows
                                     decode_all=self.cfg.validate_data and with_target,
                                     cached=not self.cfg.no_data_cache,
                                     cache_dir=self.cfg.data_cache_dir,
                                     scan_workers=scan_workers(self.cfg.scan_workers))
        if dataset.references:
            self._corpora[dataset.name] = Corpus(dataset.references)
        return dataset

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None,
                           max_positions=None, ignore_invalid_inputs=False,
                           required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
                           num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False):
        """Training on WebDataset shards streams them (``data/stream_batches.py``); any
        other subset is read by index, as fairseq reads every dataset."""
        if not (isinstance(dataset, InstructionDataset) and dataset.train
                and dataset.streamable):
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch,
                data_buffer_size, disable_iterator_cache, skip_remainder_batch,
                grouped_shuffling, update_epoch_batch_itr)
        files = len(dataset.tables)
        if files < num_shards:
            raise ValueError(f"{dataset.name}: {files} shard(s) cannot feed {num_shards} "
                             f"data-parallel ranks (each streams whole shards): write more, "
                             f"smaller ones (ofasys-prepare webdataset --samples-per-shard)")
        layout = StreamLayout(num_shards, max(1, num_workers), self.cfg.stream_buffer)
        if files < num_shards * layout.workers:
            logger.warning(f"{dataset.name}: {files} shards for {num_shards} rank(s) x "
                           f"{layout.workers} DataLoader workers: some workers stay idle")
        kept = np.zeros(len(dataset), dtype=bool)
        indices = np.arange(len(dataset))
        if max_positions is not None:
            indices = self.filter_indices_by_size(indices, dataset, max_positions,
                                                  ignore_invalid_inputs)
        kept[indices] = True
        return StreamEpochIterator(
            dataset, lambda e: StreamPlan(dataset, kept, layout, max_tokens, max_sentences,
                                          required_batch_size_multiple, seed, e),
            layout, shard_id, num_workers, epoch, data_buffer_size)

    # -- model ---------------------------------------------------------------------
    def build_model(self, cfg, from_checkpoint: bool = False):
        self.prepare()
        model = super().build_model(cfg, from_checkpoint)
        model.extends_checkpoint = self.finetuning_from is not None
        if not from_checkpoint:  # training: pretrained parts (a checkpoint's weights win)
            model.load_pretrained_parts(cfg)
        if not self.cfg.no_eval_metrics:
            self.sequence_generator = self._sequence_generator(
                [model], argparse.Namespace(beam=self.cfg.eval_beam, max_len_a=0,
                                            max_len_b=self.cfg.eval_max_len))
        return model

    # -- decoding --------------------------------------------------------------------
    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        """fairseq-generate's search for token targets (see ``_sequence_generator``); for
        a continuous target the modality's own generator, whose outputs are written to
        files under ``--results-path`` (see ``inference_step``)."""
        target = self.plan.target if self.plan is not None else None
        if target is not None and get_modality(target.modality).output_kind == CONTINUOUS:
            if not get_modality(target.modality).saves_outputs():
                raise ValueError(f"fairseq-generate writes continuous outputs to files, and "
                                 f"{target} has none ({target.modality} defines no "
                                 f"save_output): decode it with OFASys.inference (validation "
                                 f"scores it during training)")
            self._results_dir(target)  # a missing --results-path fails before decoding
            return FrameGenerator(args.max_len_b, self.dictionary.eos())
        return self._sequence_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs,
                                        prefix_allowed_tokens_fn)

    def _results_dir(self, target: Slot) -> str:
        try:
            results = self.cfg.results_path
        except Exception:  # interpolation unavailable outside fairseq's tools
            results = None
        if not results:
            raise ValueError(f"{target} is a continuous output that fairseq-generate writes "
                             f"to files, one per row: give it --results-path DIR")
        return results

    def _sequence_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                            prefix_allowed_tokens_fn=None):
        """fairseq's generator with the forced prefix scored 0 and, for a target its
        modality constrains, beam search over the allowed tokens, renormalized (see
        ``decoding/restricted_generator.py``)."""
        return super().build_generator(models, args,
                                       seq_gen_cls or RestrictedSequenceGenerator,
                                       extra_gen_cls_kwargs, prefix_allowed_tokens_fn)

    def predictions(self, model, sample, generator: Optional[RestrictedSequenceGenerator],
                    max_len: Optional[int], beam: int = 1) -> List[Any]:
        """Each row's best output (what ``output`` reads): for token targets by
        ``generator`` (a sequence generator of this task; None: one with ``beam`` beams,
        ``max_len`` tokens after the forced prefix, None: ``DEFAULT_MAX_TOKENS``), for
        continuous ones by the modality's own generator (at most ``max_len`` frames, None:
        as many as the decoder's positions hold)."""
        target = sample["target_slot"]
        modality = get_modality(target.modality)
        if modality.output_kind == CONTINUOUS:
            return modality.generate(model, sample, target, self.context(target.modality),
                                     max_len or model.decoder.max_positions())
        max_len = max_len or DEFAULT_MAX_TOKENS
        if generator is None:
            prefix = sample["decoder_prefix"]
            longest = 0 if prefix is None else int(prefix.ne(self.dictionary.pad()).sum(1).max())
            generator = self._sequence_generator(
                [model], argparse.Namespace(beam=beam, max_len_a=0, max_len_b=max_len + longest))
        return [nbest[0]["tokens"] for nbest in self.inference_step(generator, [model], sample)]

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Beam search with the decoder prefix forced and the target's constraint applied;
        the forced prefix is removed from each hypothesis. A continuous target
        (``FrameGenerator``) is generated and written to files instead."""
        if isinstance(generator, FrameGenerator):
            return self._write_outputs(generator, models[0], sample)
        prefix = sample.get("decoder_prefix") if prefix_tokens is None else prefix_tokens
        prefix_lengths = ([0] * sample["nsentences"] if prefix is None
                          else prefix.ne(self.dictionary.pad()).sum(1).tolist())
        target = sample["target_slot"]
        constraint = get_modality(target.modality).constraint(
            target, self.context(target.modality, sample["closed_set"]))
        restriction = (None if constraint is None
                       else Restriction(constraint, prefix_lengths, sample["id"]))
        with torch.no_grad():
            hypos = generator.decode(models, sample, prefix, restriction, constraints)
        # fairseq-generate's scorers read every reference of these rows
        generated_references.publish(sample.get("references") or [])
        for row, nbest in enumerate(hypos):
            # no hypothesis: a constraint kept eos away until the length limit; one that
            # ends inside the prefix: the limit came first (fairseq then forces eos)
            if not nbest or len(nbest[0]["tokens"]) <= prefix_lengths[row]:
                raise ValueError(
                    f"decoding found no complete output for row {int(sample['id'][row])}: its "
                    f"forced decoder prefix has {prefix_lengths[row]} tokens, and the target "
                    f"could not end after it within the length limit (--eval-max-len or "
                    f"inference's max_len, at most --max-target-positions); raise it or "
                    f"shorten the no_loss context")
        for nbest, length in zip(hypos, prefix_lengths):
            for hypo in nbest:
                hypo["tokens"] = hypo["tokens"][length:]
                hypo["positional_scores"] = hypo["positional_scores"][length:]
        return hypos

    def _write_outputs(self, generator: FrameGenerator, model, sample) -> List[List[dict]]:
        """fairseq-generate for a continuous target: each row's output is written to
        ``--results-path/<data file name>/<id>`` (its reference next to it, as
        ``<id>.reference``) by the target's modality. fairseq-generate prints H-, D- and T-
        lines through the target dictionary, so each written path is given to it as a
        symbol of its own, added to the dictionary after the model was built (never
        embedded; nothing is saved after generation): the lines show the paths, and a
        scorer such as ``--scoring mcd`` reads the files."""
        target = sample["target_slot"]
        modality = get_modality(target.modality)
        directory = os.path.join(self._results_dir(target),
                                 os.path.splitext(os.path.basename(sample["data_path"]))[0])
        os.makedirs(directory, exist_ok=True)
        predictions = self.predictions(model, sample, None, generator.max_frames)
        hypos, references = [], []
        for row, (sample_id, prediction) in enumerate(zip(sample["id"].tolist(), predictions)):
            stem = os.path.join(directory, str(sample_id))
            path = modality.save_output(self.output(sample, row, prediction), stem)
            logger.info(f"row {sample_id}: {path}")
            hypos.append([{"tokens": torch.tensor([self.dictionary.add_symbol(path)]),
                           "score": 0.0, "alignment": None,
                           "positional_scores": torch.zeros(1)}])
            if sample.get("references"):
                reference = modality.save_output(sample["references"][row],
                                                 f"{stem}.reference")
                references.append(torch.tensor([self.dictionary.add_symbol(reference)]))
        sample["target"] = torch.stack(references) if references else None
        return hypos

    def output(self, sample, row: int, prediction) -> Any:
        """Row ``row``'s prediction (decoded target tokens, or a continuous modality's
        frames) as the user's value (text, a label, a box in pixels, ...), by the target's
        modality."""
        target = sample["target_slot"]
        modality = get_modality(target.modality)
        if modality.output_kind == TOKENS:
            prediction = [int(t) for t in prediction if int(t) != self.dictionary.eos()]
        return modality.postprocess(prediction, target,
                                    self.context(target.modality, sample["closed_set"]),
                                    sample["output_context"][row])

    def build_bpe(self, args):
        if getattr(args, "_name", None):
            return super().build_bpe(args)
        return SentencepieceDetokenizer(self.modality_settings)

    # -- validation metrics ----------------------------------------------------------
    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if not self.cfg.no_eval_metrics and sample.get("references"):
            predictions = self.predictions(model, sample, self.sequence_generator,
                                           self.cfg.eval_max_len)
            logging_output.update(self.metric_stats(sample, predictions))
        return loss, sample_size, logging_output

    def metric_stats(self, sample, predictions: List[Any],
                     metrics: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Summable statistics of the rows' predictions (see ``reduce_metrics``) for
        ``metrics`` (default: the run's validation metrics)."""
        target = sample["target_slot"]
        outputs = [self.output(sample, row, p) for row, p in enumerate(predictions)]
        return get_modality(target.modality).metric_stats(
            outputs, sample["references"], target, metrics or self.validation_metrics(),
            self._corpora[sample["data_path"]])

    def default_metrics(self) -> List[str]:
        """The validation metrics of this task's target by default, as its modality names
        them (accuracy for closed sets, Acc@IoU for boxes, BLEU for free text, ...)."""
        return get_modality(self.plan.target.modality).metrics(self.plan.target,
                                                               self.plan.templates[0])

    def supported_metrics(self) -> List[str]:
        """Every metric a run may select for this task's target."""
        target, template = self.plan.target, self.plan.templates[0]
        optional = get_modality(target.modality).optional_metrics(target, template)
        return list(dict.fromkeys(self.default_metrics() + optional))

    def validation_metrics(self) -> List[str]:
        """``--eval-metrics`` (checked against what the target supports), else the defaults."""
        chosen = [m.strip() for m in (self.cfg.eval_metrics or "").split(",") if m.strip()]
        unknown = [m for m in chosen if m not in self.supported_metrics()]
        if unknown:
            raise ValueError(f"--eval-metrics {', '.join(unknown)}: not available for the "
                             f"target {self.plan.target}; it supports "
                             f"{', '.join(self.supported_metrics())}")
        return chosen or self.default_metrics()

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        log_metrics(logging_outputs)


def upgrade_task_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """A task state as this version writes it. Format 1 (before modalities had their own
    settings) kept them in other places; each modality reads its own back."""
    if "format" in state:
        if state["format"] > STATE_FORMAT:
            raise ValueError(f"this checkpoint's task state has format {state['format']}, "
                             f"newer than this ofasys-fairseq reads ({STATE_FORMAT})")
        return state
    settings = {}
    for modality in registered_modalities():
        if modality.implemented:
            try:
                old = modality.settings_from_old_checkpoint(state)
            except KeyError as missing:
                raise ValueError(f"unrecognized task state in this checkpoint (no format, no "
                                 f"{missing}): it was not written by ofasys-fairseq") from None
            if old:
                settings[modality.name] = old
    return {**state, "format": STATE_FORMAT, "modalities": settings}


def build_vocabulary(cfg: InstructionCommonConfig, texts: Sequence[str], dictionary: Dictionary,
                     settings: Mapping[str, Mapping[str, Any]]) -> Vocabulary:
    """The run's vocabulary, filled into ``dictionary``: ``--sentencepiece-model`` or one
    trained on ``texts``, then the symbols every modality reserves, then those its fitted
    ``settings`` add."""
    if cfg.sentencepiece_model:
        proto = load_sentencepiece(cfg.sentencepiece_model)
    else:
        proto = train_sentencepiece(texts, cfg.vocab_size,
                                    cfg.vocab_cache_dir or default_cache_dir())
    reserved, fitted = modality_symbols(cfg, settings)
    vocab = Vocabulary(proto, reserved + fitted, dictionary)
    logger.info(f"dictionary: {len(dictionary)} types ({len(reserved)} reserved by modalities"
                + (f", {len(fitted)} from the training data" if fitted else "") + ")")
    return vocab


def modality_symbols(cfg: InstructionCommonConfig, settings: Mapping[str, Mapping[str, Any]]
                     ) -> Tuple[List[str], List[str]]:
    """The symbols every modality reserves, and those its fitted ``settings`` add."""
    modalities = [m for m in registered_modalities() if m.implemented]
    reserved = [symbol for m in modalities for symbol in m.reserved_symbols(cfg)]
    fitted = [symbol for m in modalities if m.name in settings
              for symbol in m.fitted_symbols(settings[m.name])]
    return reserved, fitted


def check_finetuning_options(saved: Mapping[str, Mapping[str, Any]],
                             settings: Mapping[str, Mapping[str, Any]], path: str) -> None:
    """A ValueError naming every option of this run that differs from the checkpoint's
    where a modality's ``checkpoint_options`` say the trained model depends on it."""
    differing = [f"--{key.replace('_', '-')} {saved[name][key]} (this run: {value})"
                 for name, run in settings.items() if name in saved
                 for key, value in run.items()
                 if key in get_modality(name).checkpoint_options
                 and saved[name].get(key, value) != value]
    if differing:
        raise ValueError(f"fine-tuning {path}: its model was trained with "
                         f"{', '.join(differing)}; pass the checkpoint's value")


def sampled_rows(count: int, limit: int, seed: int) -> Sequence[int]:
    """Indices of at most ``limit`` of ``count`` rows (all when ``limit`` is 0 or not
    below ``count``), a sample seeded by ``seed``, in file order."""
    if limit <= 0 or count <= limit:
        return range(count)
    return np.sort(np.random.default_rng([seed, count]).choice(count, limit, replace=False))


def extend_vocabulary(saved: Mapping[str, Any], cfg: InstructionCommonConfig,
                      texts: Sequence[str], dictionary: Dictionary,
                      settings: Mapping[str, Mapping[str, Any]]) -> Vocabulary:
    """A checkpoint's vocabulary for fine-tuning, filled into ``dictionary``: its symbols
    keep their ids, the symbols this run's modalities need that it lacks are appended (a
    new modality's tokens, a new phone set), and it is never retrained on ``texts``; the
    share of their tokens it reads as ``<unk>`` (characters it never saw) is logged."""
    symbols = list(saved["symbols"])
    kept = symbols[symbols.index(MASK_SYMBOL) + 1:]
    added = [s for s in dict.fromkeys(sum(modality_symbols(cfg, settings), []))
             if s not in kept]
    vocab = Vocabulary(saved["sentencepiece_model"], kept + added, dictionary)
    if list(dictionary.symbols[:len(symbols)]) != symbols:
        raise ValueError("the checkpoint's vocabulary does not match its sentencepiece model")
    tokens = [t for text in texts for t in vocab.encode(text)]
    unknown = sum(t == dictionary.unk() for t in tokens)
    logger.info(f"dictionary: the checkpoint's {len(symbols)} types, {len(added)} appended "
                f"({', '.join(added[:5])}{', ...' if len(added) > 5 else ''})"
                if added else f"dictionary: the checkpoint's {len(symbols)} types")
    if unknown:
        logger.warning(f"{unknown} of the training data's {len(tokens)} text tokens are <unk> to "
                       f"the checkpoint's vocabulary (characters it never saw)")
    return vocab


class SentencepieceDetokenizer:
    """fairseq-generate's ``decode_fn`` for our pieces (D- and T- lines). Text already
    detokenized by ``--post-process sentencepiece`` passes unchanged; an output of another
    modality prints as that modality formats it (a box as ``x0,y0,x1,y1`` fractions).

    Args:
        settings: the run's settings per modality name.
    """

    def __init__(self, settings: Mapping[str, Mapping[str, Any]]):
        self.settings = settings

    def decode(self, text: str) -> str:
        for modality in registered_modalities():
            if modality.name in self.settings:
                formatted = modality.format_generated(text, self.settings[modality.name])
                if formatted is not None:
                    return formatted
        if "\u2581" not in text:
            return text
        return text.replace(" ", "").replace("\u2581", " ").strip()

