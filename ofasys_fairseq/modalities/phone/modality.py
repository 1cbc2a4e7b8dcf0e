"""PHONE: a sequence of phones, each its own token of the shared vocabulary (not
sentencepiece pieces), as an input or a target.

A cell holds the phones separated by spaces (``h iː t ˈɜː n d``; ``convert.py`` makes
them from text with eSpeak NG) or a JSON list of them. The phone set is the training
split's: every phone seen there becomes a dictionary symbol ``<phone:ʃ>`` (the
checkpoint keeps them), and a phone outside it is a data error. As a target, decoding
emits phones only; the metric is the phone error rate.

    [AUDIO:wav] -> [PHONE:phones]
"""
import json
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ...scoring.validation_metrics import register_metric
from ...scoring.wer import word_errors
from ..base import Context, Corpus, Modality, TokenConstraint
from ..text import NO_LOSS

PHONE = "PHONE"
SYMBOL_PREFIX, SYMBOL_SUFFIX = "<phone:", ">"
# phone symbols as fairseq-generate prints them, with or without spaces (--post-process)
SYMBOLS_PATTERN = re.compile(r"(?:\s*<phone:[^<>\s]+>)+\s*")
SYMBOL_PATTERN = re.compile(r"<phone:([^<>\s]+)>")

register_metric("per", "_per_errors", "_per_phones", lower_is_better=True)


def phone_symbol(phone: str) -> str:
    return f"{SYMBOL_PREFIX}{phone}{SYMBOL_SUFFIX}"


def read_phones(cell: Any, slot) -> List[str]:
    """The phones of a cell: space-separated text, or a JSON list of strings."""
    if isinstance(cell, str) and cell.lstrip().startswith("["):
        try:
            cell = json.loads(cell)
        except ValueError as error:
            raise ValueError(f"{slot}: a cell starting with '[' must be a JSON list of "
                             f"phones: {error}") from None
    if isinstance(cell, list) and all(isinstance(p, str) and p.strip() for p in cell):
        phones = [p.strip() for p in cell]
    elif isinstance(cell, str):
        phones = cell.split()
    else:
        raise ValueError(f"expected phones separated by spaces for {slot}, found "
                         f"{type(cell).__name__}")
    if not phones:
        raise ValueError(f"expected phones separated by spaces for {slot}, found an empty cell")
    if any(len(p.split()) != 1 for p in phones):
        raise ValueError(f"{slot}: a phone of a JSON list holds a space: {phones}")
    return phones


class PhoneConstraint(TokenConstraint):
    """Phones, then end of sentence."""

    def __init__(self, allowed: List[int]):
        self.allowed_ids = torch.tensor(allowed)

    def allowed_mask(self, generated, lengths, vocab_size):
        row = torch.zeros(vocab_size, dtype=torch.bool, device=generated.device)
        row[self.allowed_ids.to(generated.device)] = True
        return row.expand(len(generated), vocab_size)


class PhoneModality(Modality):
    name = PHONE
    attributes = {"no_loss": NO_LOSS}
    choices = {"preprocess": ("phones",), "adaptor": ("text",)}  # tokens of the text stream
    fits_statistics = True  # the phone set

    def settings(self, cfg) -> Dict[str, Any]:
        return {"phones": None}

    # -- the phone set ---------------------------------------------------------------------
    def cell_statistics(self, value: List[str], slot, ctx: Context) -> List[str]:
        return value

    def fit(self, settings, statistics: Sequence[List[str]]) -> Dict[str, Any]:
        return {**settings, "phones": sorted({p for phones in statistics for p in phones})}

    def check_settings(self, settings, slots) -> None:
        if slots and settings.get("phones") is None:
            raise ValueError(f"this model was not trained on {PHONE} slots like {slots[0]}: "
                             f"it has no phone set")

    def fitted_symbols(self, settings) -> List[str]:
        return [phone_symbol(p) for p in settings.get("phones") or []]

    # -- cells -----------------------------------------------------------------------------
    def read(self, cell, slot, ctx: Context, decode: bool = True) -> List[str]:
        phones = read_phones(cell, slot)
        known = ctx.settings.get("phones")
        if known is not None:  # None while the phone set is being collected
            unknown = sorted(set(phones) - set(known))
            if unknown:
                raise ValueError(f"phone(s) {' '.join(unknown)} are not in this model's phone "
                                 f"set ({len(known)} phones, those of its training data)")
        return phones

    def num_tokens(self, value: List[str], slot, ctx: Context) -> int:
        return len(value)

    def tokens(self, value: List[str], slot, ctx: Context,
               rng: Optional[np.random.Generator]) -> List[int]:
        return [ctx.vocab.dictionary.index(phone_symbol(p)) for p in value]

    # -- outputs -----------------------------------------------------------------------------
    def reference(self, value: List[str], slot, ctx: Context) -> str:
        return " ".join(value)

    def constraint(self, slot, ctx: Context) -> TokenConstraint:
        dictionary = ctx.vocab.dictionary
        return PhoneConstraint([dictionary.index(phone_symbol(p)) for p in ctx.settings["phones"]]
                               + [dictionary.eos()])

    def postprocess(self, tokens: Sequence[int], slot, ctx: Context, output_context) -> str:
        """The phones separated by spaces."""
        return " ".join(_phone_of(ctx.vocab.dictionary[int(t)]) for t in tokens)

    def metrics(self, slot, template) -> List[str]:
        return ["per"]

    def optional_metrics(self, slot, template) -> List[str]:
        return ["exact_match"]

    def metric_stats(self, predictions: Sequence[str], references: Sequence[str], slot,
                     metrics: Sequence[str], corpus: Corpus) -> Dict[str, float]:
        stats: Dict[str, float] = {}
        if "per" in metrics:
            errors = [word_errors(p, [r]) for p, r in zip(predictions, references)]
            stats.update(_per_errors=sum(e for e, _ in errors),
                         _per_phones=sum(n for _, n in errors))
        if "exact_match" in metrics:
            stats.update(_exact_match_sum=sum(p == r for p, r in zip(predictions, references)),
                         _exact_match_count=len(predictions))
        return stats

    def format_generated(self, text: str, settings) -> Optional[str]:
        """Phone symbols print as the phones, separated by spaces."""
        if not SYMBOLS_PATTERN.fullmatch(text):
            return None
        return " ".join(SYMBOL_PATTERN.findall(text))


def _phone_of(symbol: str) -> str:
    """The phone of a symbol (constrained decoding emits nothing else)."""
    match = SYMBOL_PATTERN.fullmatch(symbol)
    return match.group(1) if match else symbol
