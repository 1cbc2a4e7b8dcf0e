"""``fairseq-generate --scoring exact_match``: the share of outputs equal to their
reference, i.e. the accuracy that validation reports for ``closed_set`` targets."""
from dataclasses import dataclass

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import BaseScorer, register_scorer


@dataclass
class ExactMatchConfig(FairseqDataclass):
    pass


@register_scorer("exact_match", dataclass=ExactMatchConfig)
class ExactMatchScorer(BaseScorer):
    """Compares fairseq-generate's detokenized hypothesis and target strings."""

    def correct(self) -> int:
        return sum(ref == pred for ref, pred in zip(self.ref, self.pred))

    def score(self) -> float:
        return 100.0 * self.correct() / max(len(self.ref), 1)

    def result_string(self) -> str:
        return f"exact_match = {self.score():.2f} ({self.correct()}/{len(self.ref)})"
