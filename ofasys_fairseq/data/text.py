"""TEXT slot preprocessing: normalization and training-time noise."""
import unicodedata
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..instruction import Slot
from .table import DataError, required_cell

MEAN_SPAN_LENGTH = 3.0  # BART's Poisson(lambda=3) span lengths


def normalize_text(value: str, slot: Slot = None) -> str:
    """Whitespace-collapsed text, lower-cased / punctuation-free when the slot asks."""
    if slot is not None:
        if slot.has("uncased"):
            value = value.lower()
        if slot.has("no_punctuation"):
            value = "".join(" " if unicodedata.category(c).startswith("P") else c for c in value)
    return " ".join(value.split())


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


def text_value(row: Dict[str, object], slot: Slot, path: str, line: Optional[int]) -> str:
    """The raw text a TEXT slot reads from ``row``; a located error if unusable."""
    value = required_cell(row, slot, path, line)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"expected text for {slot}, found {type(value).__name__}", path, line,
                        slot.column)
    return str(value)
