"""TEXT: a cell of text, as sentencepiece tokens of the shared vocabulary.

In the encoder its tokens join the text stream (BART span masking and random-token
noise in training); as a target it is free text (BLEU, plus CIDEr-D for text about
feature inputs such as images) or, with ``closed_set``, one of a label set (accuracy;
decoding restricted to the labels' token trie).

A target cell may hold several references, as a JSON list (``["a dog", "a puppy"]``; in
a TSV/CSV file, a cell that parses as a JSON list of strings): each epoch trains on one
of them, drawn with the row's seed (with ``closed_set``, one of those in the label set),
and every metric reads all of them. Validation loss is on the first one.
"""
import json
import unicodedata
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import sacrebleu

from ..instruction import AttrSpec, Slot
from ..scoring.bleu import reference_streams
from ..scoring.cider import CiderD
from ..scoring.references import reference_list
from ..scoring.rouge import rouge_l
from ..scoring.validation_metrics import BLEU_ORDER
from ..scoring.vqa_score import vqa_score
from ..scoring.wer import word_errors
from .base import (DECODER, ENCODER, Context, Corpus, Modality, Target, TokenConstraint,
                   unique)
from .registry import get_modality

MEAN_SPAN_LENGTH = 3.0  # BART's Poisson(lambda=3) span lengths

# attributes other token types share
NO_LOSS = AttrSpec("flag", "decoder-side context: teacher-forced, no loss on its tokens",
                   sides=(DECODER,))
CLOSED_SET = AttrSpec("flag", "the target is one of a fixed set of candidates", sides=(DECODER,))
UNCASED = AttrSpec("flag", "lower-case the text before tokenizing")
MAX_LENGTH = AttrSpec("int", "keep at most this many tokens", min=1)


class TextValue(NamedTuple):
    text: str  # normalized as the slot asks
    tokens: List[int]  # encoded, cut at max_length
    references: Tuple["TextValue", ...] = ()  # each one, when a target cell holds a list


def normalize_text(value: str, slot: Optional[Slot] = None) -> str:
    """Whitespace-collapsed text, lower-cased / punctuation-free when the slot asks."""
    if slot is not None:
        if slot.has("uncased"):
            value = value.lower()
        if slot.has("no_punctuation"):
            value = "".join(" " if unicodedata.category(c).startswith("P") else c for c in value)
    return " ".join(value.split())


def cell_text(cell: Any, slot: Slot) -> str:
    """The raw text of a cell (numbers are text too); ValueError for anything else."""
    if isinstance(cell, bool) or not isinstance(cell, (str, int, float)):
        raise ValueError(f"expected text for {slot}, found {type(cell).__name__}")
    return str(cell)


def is_target(slot: Slot) -> bool:
    return slot.side == DECODER and not slot.has("no_loss")


def reference_cells(cell: Any, slot: Slot) -> Optional[List[Any]]:
    """The references of a cell holding a list of them (a JSON list in a text file),
    None for a single value; ValueError for a list where a list cannot stand."""
    if isinstance(cell, str) and cell.lstrip().startswith("[") and is_target(slot):
        try:
            parsed = json.loads(cell)
        except ValueError:
            return None
        is_strings = isinstance(parsed, list) and all(isinstance(c, str) for c in parsed)
        cell = parsed if is_strings else cell
    if not isinstance(cell, list):
        return None
    if not is_target(slot):
        raise ValueError(f"a list of references is read only in a target column; {slot} is "
                         f"not the target")
    if not cell:
        raise ValueError(f"expected at least one reference for {slot}, found an empty list")
    return cell


def mask_spans(tokens: Sequence[int], ratio: float, mask_index: int,
               rng: np.random.Generator) -> List[int]:
    """BART text infilling: about ``ratio`` of the tokens, in Poisson-length spans,
    each span replaced by a single ``<mask>``."""
    tokens = list(tokens)
    budget = int(round(len(tokens) * ratio))
    if budget == 0:
        return tokens
    masked = np.zeros(len(tokens), dtype=bool)
    for _ in range(4 * len(tokens)):  # bounded: overlapping spans may add nothing
        remaining = budget - int(masked.sum())
        if remaining <= 0:
            break
        length = int(min(max(rng.poisson(MEAN_SPAN_LENGTH), 1), remaining))
        start = int(rng.integers(0, len(tokens) - length + 1))
        masked[start:start + length] = True
    out: List[int] = []
    for i, token in enumerate(tokens):
        if not masked[i]:
            out.append(token)
        elif i == 0 or not masked[i - 1]:
            out.append(mask_index)
    return out


def replace_random_tokens(tokens: Sequence[int], ratio: float, candidates: range,
                          rng: np.random.Generator) -> List[int]:
    """Replace each token with a random subword with probability ``ratio``."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if ratio <= 0 or tokens.size == 0:
        return tokens.tolist()
    noisy = rng.random(tokens.size) < ratio
    tokens[noisy] = rng.integers(candidates.start, candidates.stop, int(noisy.sum()))
    return tokens.tolist()


class LabelConstraint(TokenConstraint):
    """Only continuations of some label, then end of sentence."""

    def __init__(self, closed_set, eos: int):
        self.trie, self.eos = closed_set.trie, eos

    def allowed_mask(self, generated, lengths, vocab_size):
        mask = self.trie.allowed_mask(generated, lengths, vocab_size)
        mask[:, self.eos] |= ~mask.any(dim=1)  # off the labels: end it (it scores -inf anyway)
        return mask


class TextModality(Modality):
    name = "TEXT"
    attributes = {
        "no_loss": NO_LOSS,
        "closed_set": CLOSED_SET,
        "max_length": MAX_LENGTH,
        "uncased": UNCASED,
        "no_punctuation": AttrSpec("flag", "remove punctuation before tokenizing"),
        "mask_ratio": AttrSpec("float", "fraction of tokens replaced by <mask>", min=0, max=1,
                               sides=(ENCODER,)),
        "noise_ratio": AttrSpec("float", "fraction of tokens replaced by random tokens", min=0,
                                max=1),
    }
    choices = {"preprocess": ("text",), "adaptor": ("text",)}
    trains_vocabulary = True

    # -- cells -------------------------------------------------------------------------
    def vocabulary_texts(self, cell, slot: Slot, base_dir: str = ".") -> Sequence[str]:
        cells = reference_cells(cell, slot) or [cell]
        return [normalize_text(cell_text(c, slot), slot) for c in cells]

    def label_text(self, value, slot: Slot) -> str:
        return normalize_text(value, slot)

    def read(self, cell, slot: Slot, ctx: Context, decode: bool = True) -> TextValue:
        cells = reference_cells(cell, slot)
        if cells is None:
            value = self._read_text(cell, slot, ctx)
            if slot.has("closed_set") and not self._is_label(value, ctx):
                raise ValueError(f"'{value.text}' is not one of the "
                                 f"{len(ctx.closed_set.labels)} closed-set labels of this task")
            return value
        references = tuple(self._read_text(c, slot, ctx) for c in cells)
        trainable = self._trainable(references, slot, ctx)
        if not trainable:
            raise ValueError(f"none of the {len(references)} references is one of the "
                             f"{len(ctx.closed_set.labels)} closed-set labels of this task")
        return trainable[0]._replace(references=references)

    def _read_text(self, cell, slot: Slot, ctx: Context) -> TextValue:
        text = normalize_text(cell_text(cell, slot), slot)
        tokens = ctx.vocab.encode(text)
        if slot.get("max_length"):
            tokens = tokens[:slot.get("max_length")]
        return TextValue(text, tokens)

    @staticmethod
    def _is_label(value: TextValue, ctx: Context) -> bool:
        return tuple(value.tokens) in ctx.closed_set.label_of

    def _trainable(self, references: Sequence[TextValue], slot: Slot,
                   ctx: Context) -> List[TextValue]:
        """The references a model may be trained to output (labels, for a closed set)."""
        if not slot.has("closed_set"):
            return list(references)
        return [r for r in references if self._is_label(r, ctx)]

    # -- input -------------------------------------------------------------------------
    def num_tokens(self, value: TextValue, slot: Slot, ctx: Context) -> int:
        return len(value.tokens)

    def tokens(self, value: TextValue, slot: Slot, ctx: Context,
               rng: Optional[np.random.Generator]) -> List[int]:
        tokens = value.tokens
        if rng is not None:
            if slot.get("mask_ratio"):
                tokens = mask_spans(tokens, slot.get("mask_ratio"), ctx.vocab.mask_index, rng)
            if slot.get("noise_ratio"):
                tokens = replace_random_tokens(tokens, slot.get("noise_ratio"),
                                               ctx.vocab.subword_ids, rng)
        return tokens

    # -- output ------------------------------------------------------------------------
    def target_length(self, value: TextValue, slot: Slot, ctx: Context) -> int:
        return max(len(v.tokens) for v in value.references or (value,))

    def reference(self, value: TextValue, slot: Slot, ctx: Context) -> Any:
        """The text (a label as written in the label set), or a list of them."""
        if value.references:
            return [self._reference_text(v, ctx) for v in value.references]
        return self._reference_text(value, ctx)

    @staticmethod
    def _reference_text(value: TextValue, ctx: Context) -> str:
        label = ctx.closed_set.label_of.get(tuple(value.tokens)) if ctx.closed_set else None
        return ctx.vocab.decode(value.tokens) if label is None else label

    def target(self, value: TextValue, slot: Slot, ctx: Context,
               rng: Optional[np.random.Generator]) -> Target:
        candidates = self._trainable(value.references, slot, ctx) or [value]
        if rng is not None and len(candidates) > 1:  # one reference per row and epoch
            value = candidates[int(rng.integers(len(candidates)))]
        inputs = value.tokens
        if rng is not None and slot.get("noise_ratio"):
            # the decoder reads a noisy copy of its target; the loss sees the clean one
            inputs = replace_random_tokens(value.tokens, slot.get("noise_ratio"),
                                           ctx.vocab.subword_ids, rng)
        return Target(value.tokens, inputs)

    def constraint(self, slot: Slot, ctx: Context) -> Optional[TokenConstraint]:
        if not slot.has("closed_set"):
            return None
        return LabelConstraint(ctx.closed_set, ctx.vocab.dictionary.eos())

    def postprocess(self, tokens: Sequence[int], slot: Slot, ctx: Context, output_context) -> str:
        """The text; for a closed set, the label as written in the label set."""
        ids = tuple(tokens)
        if ctx.closed_set is not None and ids in ctx.closed_set.label_of:
            return ctx.closed_set.label_of[ids]
        return ctx.vocab.decode(ids)

    def metrics(self, slot: Slot, template) -> List[str]:
        """Accuracy for closed sets; for free text, what its inputs' modalities say of a
        text about them (an image's caption: BLEU and CIDEr-D; speech's transcript: WER),
        else BLEU."""
        if slot.has("closed_set"):
            return ["accuracy"]
        about = unique(m for s in template.slots if s.side == ENCODER
                       for m in get_modality(s.modality).text_metrics())
        return about or ["bleu"]

    def optional_metrics(self, slot: Slot, template) -> List[str]:
        if slot.has("closed_set"):
            return ["exact_match", "vqa_score"]
        return ["bleu", "cider", "rouge_l", "exact_match", "vqa_score", "wer"]

    def metric_stats(self, predictions: Sequence[str], references: Sequence[Any], slot: Slot,
                     metrics: Sequence[str], corpus: Corpus) -> Dict[str, float]:
        """Every metric reads every reference of a row (see ``scoring/``)."""
        references = [reference_list(r) for r in references]
        pairs = list(zip(predictions, references))
        stats: Dict[str, float] = {}
        if "accuracy" in metrics:
            stats.update(_correct=sum(p in r for p, r in pairs), _total=len(pairs))
        if "exact_match" in metrics:
            stats.update(_exact_match_sum=sum(p in r for p, r in pairs),
                         _exact_match_count=len(pairs))
        if "bleu" in metrics:
            bleu = sacrebleu.corpus_bleu(list(predictions), reference_streams(references))
            stats.update(_bleu_sys_len=bleu.sys_len, _bleu_ref_len=bleu.ref_len)
            for i in range(BLEU_ORDER):
                stats[f"_bleu_counts_{i}"] = bleu.counts[i]
                stats[f"_bleu_totals_{i}"] = bleu.totals[i]
        if "cider" in metrics:
            # CIDEr-D's document frequencies come from every reference of the file
            if "cider" not in corpus.cache:
                corpus.cache["cider"] = CiderD([reference_list(r) for r in corpus.references])
            cider = corpus.cache["cider"]
            stats.update(_cider_sum=sum(cider.score(p, r) for p, r in pairs),
                         _cider_count=len(pairs))
        if "rouge_l" in metrics:
            stats.update(_rouge_l_sum=sum(rouge_l(p, r) for p, r in pairs),
                         _rouge_l_count=len(pairs))
        if "vqa_score" in metrics:
            stats.update(_vqa_score_sum=sum(vqa_score(p, r) for p, r in pairs),
                         _vqa_score_count=len(pairs))
        if "wer" in metrics:
            errors = [word_errors(p, r) for p, r in pairs]
            stats.update(_wer_errors=sum(e for e, _ in errors),
                         _wer_words=sum(w for _, w in errors))
        return stats
