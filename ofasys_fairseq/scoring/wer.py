"""Word error rate: (substitutions + deletions + insertions) / reference words, by
``jiwer``'s alignment of whitespace-separated words, case and punctuation kept: the
same words as ``fairseq-generate --scoring wer`` (fairseq's scorer, tokenizer ``none``);
``--wer-lowercase`` and ``--wer-remove-punct`` normalize there only. The phone error
rate is the same count over space-separated phones (``--scoring per``)."""
from typing import Sequence, Tuple

import jiwer
from fairseq.scoring import register_scorer
from fairseq.scoring.wer import WerScorer, WerScorerConfig


def word_errors(prediction: str, references: Sequence[str]) -> Tuple[int, int]:
    """(errors, reference words) against the reference ``prediction`` is closest to
    (fewest errors; one reference is the usual case)."""
    if not references:
        raise ValueError("a word error rate needs at least one reference")
    return min((_errors(prediction, reference) for reference in references),
               key=lambda counts: counts[0])


def _errors(prediction: str, reference: str) -> Tuple[int, int]:
    words = reference.split()
    if not words:  # jiwer refuses empty references: every predicted word is inserted
        return len(prediction.split()), 0
    if not prediction.split():
        return len(words), len(words)
    aligned = jiwer.process_words(" ".join(words), " ".join(prediction.split()))
    return (aligned.substitutions + aligned.deletions + aligned.insertions,
            aligned.substitutions + aligned.deletions + aligned.hits)


@register_scorer("per", dataclass=WerScorerConfig)
class PerScorer(WerScorer):
    """``fairseq-generate --scoring per``: fairseq's word error rate over the phones of
    PHONE outputs (printed separated by spaces)."""

    def result_string(self) -> str:
        return f"PER: {self.score():.2f}"
