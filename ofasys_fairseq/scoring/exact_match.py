"""``fairseq-generate --scoring exact_match``: the share of outputs equal to one of their
references, i.e. the accuracy that validation reports for ``closed_set`` targets."""
from dataclasses import dataclass
from typing import Sequence

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import register_scorer

from .references import MultiReferenceScorer


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when ``prediction`` is one of ``references``, else 0.0."""
    return float(prediction in references)


@dataclass
class ExactMatchConfig(FairseqDataclass):
    pass


@register_scorer("exact_match", dataclass=ExactMatchConfig)
class ExactMatchScorer(MultiReferenceScorer):
    """Compares fairseq-generate's detokenized hypothesis with every reference of its row."""

    name = "exact_match"

    def example_score(self, prediction: str, references: Sequence[str]) -> float:
        return exact_match(prediction, references)

    def result_string(self) -> str:
        correct = int(sum(map(self.example_score, self.pred, self.references)))
        return f"{self.name} = {self.score():.2f} ({correct}/{len(self.pred)})"
