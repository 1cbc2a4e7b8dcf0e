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
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import sacrebleu
import torch
from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..data.box import BOX_LENGTH, dequantize
from ..data.instruction_dataset import ClosedSet, InstructionDataset
from ..data.table import DataError, Table, find_split_file
from ..data.text import normalize_text, text_value
from ..data.vocabulary import (Vocabulary, default_cache_dir, load_sentencepiece,
                               train_sentencepiece)
from ..decoding.restricted_generator import RestrictedSequenceGenerator
from ..instruction import Slot
from ..models.adapters.image import DEFAULT_GEOMETRY, IMAGE_ADAPTORS, ImageGeometry
from ..plan import TaskPlan
from ..scoring.box_accuracy import box_accuracy
from ..scoring.cider import CiderD
from ..scoring.validation_metrics import BLEU_ORDER, log_metrics

logger = logging.getLogger(__name__)
BIN_PATTERN = re.compile(r"<bin_(\d+)>")
LOCATIONS_PATTERN = re.compile(r"(\s*<bin_\d+>)+\s*")


@dataclass
class InstructionCommonConfig(FairseqDataclass):
    """Options shared by ``--task instruction`` and ``--task multitask``: one vocabulary,
    one image geometry and one validation decoding recipe per model."""
    vocab_size: int = field(default=8000, metadata={
        "help": "upper bound on sentencepiece pieces trained from the training data"})
    sentencepiece_model: Optional[str] = field(default=None, metadata={
        "help": "use this sentencepiece .model instead of training one"})
    vocab_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "where trained sentencepiece models are cached (default ~/.cache/ofasys_fairseq)"})
    num_bins: int = field(default=1000, metadata={"help": "number of <bin_k> location tokens"})
    max_source_positions: int = field(default=1024, metadata={"help": "longest encoder input"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest decoder sequence"})
    skip_invalid_rows: bool = field(default=False, metadata={
        "help": "skip rows with missing or bad values (the count is logged) instead of failing"})
    no_eval_metrics: bool = field(default=False, metadata={
        "help": "do not decode during validation (by default it reports accuracy for "
                "closed_set targets, BLEU for free text)"})
    eval_beam: int = field(default=1, metadata={"help": "beam size for validation decoding"})
    eval_max_len: int = field(default=256, metadata={
        "help": "longest decoded sequence in validation, forced prefix included"})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "side of the square images IMAGE slots are resized to (default: 256 for "
                "ofasys_tiny/medium, 480 for base and larger, as OFA)"})
    image_adaptor: ChoiceEnum(IMAGE_ADAPTORS) = field(default="resnet", metadata={
        "help": "how IMAGE slots without adaptor= are embedded: ResNet stages 1-3 (stride 16) "
                "or ViT patches"})
    vit_patch_size: int = field(default=DEFAULT_GEOMETRY.vit_patch_size, metadata={
        "help": "side of a vit image patch"})
    validate_data: bool = field(default=False, metadata={
        "help": "decode every image and check every box against it while loading the data, "
                "reporting all bad rows before training (ofasys-validate does the same alone)"})
    seed: int = II("common.seed")
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")


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
        self._decoding: Optional[dict] = None  # per-batch state for constrained search
        self.sequence_generator = None
        self._references: Dict[str, List[object]] = {}  # data file -> its references
        self._ciders: Dict[str, CiderD] = {}
        # saved in the checkpoint: they fix the image adapters' patch grids
        self.image_settings = {"image_size": cfg.image_size or DEFAULT_GEOMETRY.image_size,
                               "vit_patch_size": cfg.vit_patch_size,
                               "image_adaptor": str(cfg.image_adaptor)}

    @classmethod
    def setup_task(cls, cfg: InstructionConfig, **kwargs) -> "InstructionTask":
        # Nothing here touches the data: a checkpoint must load without it.
        return cls(cfg, TaskPlan.parse(cfg.instruction) if cfg.instruction else None)

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
        self.use_vocabulary(build_vocabulary(self.cfg, self.training_texts(), self.dictionary))

    def training_texts(self) -> List[str]:
        """Read the training subset once: set the closed-set labels and return the texts
        the vocabulary is trained on (instruction literals, labels, each slot's texts)."""
        if self.plan is None:
            raise ValueError("--instruction is required to train (e.g. --instruction "
                             "'[TEXT:src] -> [TEXT:tgt]')")
        if not self.cfg.data:
            raise ValueError("no data directory given (the first positional argument)")
        table = Table(find_split_file(self.cfg.data, self.cfg.train_subset))
        plan = self.bind_plan(table)
        texts = self._read_training_texts(table, plan)
        self.labels = self._collect_labels(plan, texts)
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

    def bind_plan(self, table) -> TaskPlan:
        """The instruction with its slots bound to the columns of ``table``."""
        plan = self.plan.bind_columns(table.columns)
        missing = [c for c in plan.columns() if table.header is not None and c not in table.header]
        if missing:
            raise DataError(f"the instruction reads column(s) {', '.join(map(repr, missing))}, "
                            f"but the file's columns are: {', '.join(table.columns)}", table.path)
        return plan

    def _read_training_texts(self, table, plan: TaskPlan) -> Dict[Slot, List[str]]:
        """One pass over the training rows: each slot's normalized texts. With
        --skip-invalid-rows unreadable rows are left out (the dataset counts and reports
        them); otherwise the first one fails."""
        slots = list(dict.fromkeys(s for t in plan.templates for s in t.slots
                                   if s.modality == "TEXT"))
        texts: Dict[Slot, List[str]] = {slot: [] for slot in slots}
        for index in range(len(table)):
            try:
                row, line = table[index], table.line_number(index)
                values = [normalize_text(text_value(row, slot, table.path, line), slot)
                          for slot in slots]
            except DataError:
                if not self.cfg.skip_invalid_rows:
                    raise
                continue
            for slot, value in zip(slots, values):
                texts[slot].append(value)
        return texts

    def _collect_labels(self, plan: TaskPlan,
                        texts: Dict[Slot, List[str]]) -> Dict[str, List[str]]:
        target = plan.target
        files = self._label_files(target)
        if not target.has("closed_set"):
            return {}
        if target.column in files:
            path = os.path.join(self.cfg.data, files[target.column])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--closed-set-labels {target.column}="
                                        f"{files[target.column]}: no such file {path}")
            with open(path, encoding="utf-8") as f:
                labels = [normalize_text(line, target) for line in f if line.strip()]
        else:
            labels = sorted(set(texts[target]))
        logger.info(f"closed set '{target.column}': {len(labels)} labels")
        return {target.column: labels}

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
        literals = {normalize_text(p) for t in plan.templates
                    for p in t.encoder + t.prefix if isinstance(p, str)}
        yield from sorted(literals)
        for labels in self.labels.values():
            yield from labels
        for slot_texts in texts.values():  # dict order: slots in instruction order
            yield from slot_texts

    @property
    def image_geometry(self) -> ImageGeometry:
        return ImageGeometry(self.image_settings["image_size"],
                             self.image_settings["vit_patch_size"])

    def image_adaptors(self) -> List[str]:
        """The image adaptors the model has: those of a loaded checkpoint, else those the
        instruction's IMAGE slots use."""
        if "adaptors" in self.image_settings:
            return list(self.image_settings["adaptors"])
        adaptors = self.planned_adaptors()
        self.image_geometry.check(adaptors)
        return adaptors

    def planned_adaptors(self) -> List[str]:
        """The image adaptors the instruction's IMAGE slots use."""
        default = self.image_settings["image_adaptor"]
        return list(dict.fromkeys(s.get("adaptor") or default for t in self.plan.templates
                                  for s in t.image_slots)) if self.plan else []

    def closed_set(self, column: str) -> ClosedSet:
        if column not in self._closed_sets:
            if column not in self.labels:
                raise ValueError(f"no closed-set labels for column '{column}': the checkpoint "
                                 f"has labels for {sorted(self.labels) or 'no column'}")
            self._closed_sets[column] = ClosedSet.build(self.labels[column], self.vocab)
        return self._closed_sets[column]

    def add_labels(self, column: str, labels: Sequence[str]) -> None:
        """Give a closed_set column its label set (e.g. for a zero-shot instruction)."""
        self.labels[column] = list(dict.fromkeys(labels))
        self._closed_sets.pop(column, None)

    def state_dict(self) -> Dict[str, object]:
        if self.vocab is None:
            return {}
        return {"instruction": self.plan.text, "vocabulary": self.vocab.state_dict(),
                "labels": self.labels, "image_settings": self.image_settings}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        if not state:
            return
        if "tasks" in state:
            state = self._trained_task_state(state)
        if self.vocab is None:
            self.use_vocabulary(Vocabulary.from_state_dict(state["vocabulary"], self.dictionary))
        elif list(self.dictionary.symbols) != list(state["vocabulary"]["symbols"]):
            raise ValueError("the checkpoint's vocabulary differs from the one built for this run")
        self.labels = dict(state["labels"])
        self.image_settings = dict(state["image_settings"])
        self._closed_sets = {}
        if self.plan is None:
            self.plan = TaskPlan.parse(state["instruction"])

    def _trained_task_state(self, state: Dict[str, object]) -> Dict[str, object]:
        """A multitask checkpoint's state, narrowed to its task ``--trained-task``."""
        tasks = state["tasks"]
        name = self.cfg.trained_task
        if name not in tasks:
            problem = (f"--trained-task {name!r} is not one of its tasks" if name
                       else "name one of its tasks with --trained-task")
            raise ValueError(f"this is a multitask checkpoint: {problem} ({', '.join(tasks)})")
        return {**tasks[name], "vocabulary": state["vocabulary"],
                "image_settings": state["image_settings"]}

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
        table = Table(find_split_file(self.cfg.data, split))
        self.datasets[split] = self.dataset_for(table, self.bind_plan(table), with_target=True,
                                                train=split == self.cfg.train_subset)
        logger.info(f"{split}: {len(self.datasets[split])} examples from {table.path}")

    def dataset_for(self, table, plan: TaskPlan, with_target: bool,
                    train: bool = False) -> InstructionDataset:
        self.prepare()
        target = plan.target
        closed_set = self.closed_set(target.column) if target.has("closed_set") else None
        dataset = InstructionDataset(table, plan, self.vocab, closed_set, train=train,
                                     with_target=with_target, seed=self.cfg.seed,
                                     skip_invalid_rows=self.cfg.skip_invalid_rows,
                                     geometry=self.image_geometry,
                                     image_adaptor=self.image_settings["image_adaptor"],
                                     # a pass over data files, not over inference rows
                                     decode_images=self.cfg.validate_data and with_target)
        if dataset.references:
            self._references[table.path] = dataset.references
            self._ciders.pop(table.path, None)
        return dataset

    # -- model ---------------------------------------------------------------------
    def build_model(self, cfg, from_checkpoint: bool = False):
        self.prepare()
        # the checkpoint records which adapters the model has
        self.image_settings["adaptors"] = self.image_adaptors()
        model = super().build_model(cfg, from_checkpoint)
        if not self.cfg.no_eval_metrics:
            self.sequence_generator = self.build_generator(
                [model], argparse.Namespace(beam=self.cfg.eval_beam, max_len_a=0,
                                            max_len_b=self.cfg.eval_max_len))
        return model

    # -- decoding --------------------------------------------------------------------
    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        """Beam search restricted to the forced prefix, then to closed-set labels, and
        renormalized over what is allowed (see ``decoding/restricted_generator.py``)."""
        return super().build_generator(models, args,
                                       seq_gen_cls or RestrictedSequenceGenerator,
                                       extra_gen_cls_kwargs,
                                       prefix_allowed_tokens_fn or self._allowed_tokens)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Beam search with the decoder prefix forced and, for closed sets, only label
        continuations allowed; the forced prefix is removed from each hypothesis."""
        prefix = sample.get("decoder_prefix") if prefix_tokens is None else prefix_tokens
        prefix_lengths = ([0] * sample["nsentences"] if prefix is None
                          else prefix.ne(self.dictionary.pad()).sum(1).tolist())
        # the search names rows by sample id (fairseq passes sample["id"] along)
        self._decoding = {"prefix": prefix, "lengths": prefix_lengths,
                          "row": {int(i): r for r, i in enumerate(sample["id"].tolist())},
                          "closed_set": sample.get("closed_set"),
                          "box_target": sample.get("target_modality") == "BOX"}
        try:
            with torch.no_grad():
                hypos = generator.generate(models, sample, prefix_tokens=prefix,
                                           constraints=constraints)
        finally:
            self._decoding = None
        for nbest, length in zip(hypos, prefix_lengths):
            for hypo in nbest:
                hypo["tokens"] = hypo["tokens"][length:]
                hypo["positional_scores"] = hypo["positional_scores"][length:]
        return hypos

    def _allowed_tokens(self, sample_id: int, tokens: torch.Tensor):
        state = self._decoding
        row = state["row"][sample_id]
        generated = tokens[1:].tolist()  # tokens[0] is the decoder start symbol
        length = state["lengths"][row]
        if len(generated) < length:
            return [int(state["prefix"][row, len(generated)])]
        if state["box_target"]:
            return self._allowed_box_tokens(generated[length:])
        closed_set = state["closed_set"]
        if closed_set is None:
            return slice(None)
        return closed_set.trie.allowed(generated[length:]) or [self.dictionary.eos()]

    def _allowed_box_tokens(self, box: List[int]) -> List[int]:
        """Exactly four location tokens, with x1 > x0 and y1 > y0 (unless x0 / y0 is
        already the last bin), then end of sentence."""
        if len(box) == BOX_LENGTH:
            return [self.dictionary.eos()]
        last = self.vocab.bin_index(self.vocab.num_bins - 1)
        low = self.vocab.bin_index(0) if len(box) < 2 else min(box[-2] + 1, last)
        return list(range(low, last + 1))

    def decode_box(self, tokens: Sequence[int], image_size: Sequence[int]) -> Optional[List[float]]:
        """A decoded BOX target in pixels of an image of ``(width, height)`` (None unless
        the tokens are exactly four location tokens)."""
        bins = [int(t) - self.vocab.bin_index(0) for t in tokens if int(t) != self.dictionary.eos()]
        if len(bins) != BOX_LENGTH or not all(0 <= k < self.vocab.num_bins for k in bins):
            return None
        width, height = image_size
        return [c * scale for c, scale in zip(dequantize(bins, self.vocab.num_bins),
                                              (width, height, width, height))]

    def decode_text(self, tokens: Sequence[int], closed_set: Optional[ClosedSet] = None) -> str:
        ids = [int(t) for t in tokens if int(t) != self.dictionary.eos()]
        if closed_set is not None and tuple(ids) in closed_set.label_of:
            return closed_set.label_of[tuple(ids)]
        return self.vocab.decode(ids)

    def build_bpe(self, args):
        if getattr(args, "_name", None):
            return super().build_bpe(args)
        return SentencepieceDetokenizer(self.vocab.num_bins)

    # -- validation metrics ----------------------------------------------------------
    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.sequence_generator is not None and sample.get("references"):
            hypos = self.inference_step(self.sequence_generator, [model], sample)
            logging_output.update(self.metric_stats(sample, [h[0]["tokens"] for h in hypos]))
        return loss, sample_size, logging_output

    def metric_stats(self, sample, best: List[torch.Tensor]) -> Dict[str, float]:
        """Summable statistics of the decoded targets (see ``reduce_metrics``)."""
        references = sample["references"]
        if sample["target_modality"] == "BOX":
            return self._box_stats(best, references, sample["image_sizes"])
        predictions = [self.decode_text(t, sample.get("closed_set")) for t in best]
        if sample.get("closed_set") is not None:
            return {"_correct": sum(p == r for p, r in zip(predictions, references)),
                    "_total": len(references)}
        bleu = sacrebleu.corpus_bleu(predictions, [references])
        stats = {"_bleu_sys_len": bleu.sys_len, "_bleu_ref_len": bleu.ref_len}
        for i in range(BLEU_ORDER):
            stats[f"_bleu_counts_{i}"] = bleu.counts[i]
            stats[f"_bleu_totals_{i}"] = bleu.totals[i]
        if "images" in sample["net_input"]:  # captions: CIDEr-D over the whole subset
            cider = self._cider(sample["data_path"])
            stats["_cider_sum"] = sum(cider.score(p, [r]) for p, r in zip(predictions, references))
            stats["_cider_count"] = len(references)
        return stats

    def _cider(self, data_path: str) -> CiderD:
        """CIDEr-D's document frequencies come from every reference of the subset."""
        if data_path not in self._ciders:
            self._ciders[data_path] = CiderD([[r] for r in self._references[data_path]])
        return self._ciders[data_path]

    def _box_stats(self, tokens, references, image_sizes) -> Dict[str, float]:
        """Acc@IoU>=0.5 of decoded boxes against the pixel boxes of the data."""
        predicted = torch.tensor([self.decode_box(t, size) or [0.0] * BOX_LENGTH  # no box: a miss
                                  for t, size in zip(tokens, image_sizes.tolist())])
        hits, total = box_accuracy(predicted, torch.tensor(references).float())
        return {"_box_hits": hits, "_box_total": total}

    def supported_metrics(self) -> List[str]:
        """The validation metrics of this task's target: accuracy for closed sets, Acc@IoU
        for boxes, BLEU for free text (and CIDEr-D when the text is about images)."""
        target = self.plan.target
        if target.modality == "BOX":
            return ["box_acc"]
        if target.has("closed_set"):
            return ["accuracy"]
        return ["bleu", "cider"] if self.plan.templates[0].image_slots else ["bleu"]

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        log_metrics(logging_outputs)


def build_vocabulary(cfg: InstructionCommonConfig, texts: Sequence[str],
                     dictionary: Dictionary) -> Vocabulary:
    """The run's vocabulary, filled into ``dictionary``: ``--sentencepiece-model`` or one
    trained on ``texts``."""
    if cfg.sentencepiece_model:
        proto = load_sentencepiece(cfg.sentencepiece_model)
    else:
        proto = train_sentencepiece(texts, cfg.vocab_size,
                                    cfg.vocab_cache_dir or default_cache_dir())
    vocab = Vocabulary(proto, cfg.num_bins, dictionary)
    logger.info(f"dictionary: {len(dictionary)} types ({cfg.num_bins} location tokens)")
    return vocab


class SentencepieceDetokenizer:
    """fairseq-generate's ``decode_fn`` for our pieces (D- and T- lines). Text already
    detokenized by ``--post-process sentencepiece`` passes unchanged; a run of location
    tokens (a BOX output) prints as ``x0,y0,x1,y1`` in fractions of the image size.

    Args:
        num_bins: the number of ``<bin_k>`` location tokens.
    """

    def __init__(self, num_bins: int):
        self.num_bins = num_bins

    def decode(self, text: str) -> str:
        if LOCATIONS_PATTERN.fullmatch(text):  # with or without spaces (--post-process)
            bins = [int(k) for k in BIN_PATTERN.findall(text)]
            return ",".join(f"{c:.3f}" for c in dequantize(bins, self.num_bins))
        if "\u2581" not in text:
            return text
        return text.replace(" ", "").replace("\u2581", " ").strip()
