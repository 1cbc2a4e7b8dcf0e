"""Cell accuracy of output tables: the share of reference cells an output reproduces at
the same row and column (a missing or extra row or cell costs its cells)."""
from dataclasses import dataclass
from typing import Sequence, Tuple

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import BaseScorer, register_scorer

from .table import Rows, parse_linearized


def cell_accuracy_counts(predictions: Sequence[Rows], references: Sequence[Rows]
                         ) -> Tuple[int, int]:
    """(cells right, reference cells) over rows of tables."""
    correct = total = 0
    for predicted, reference in zip(predictions, references):
        for r, row in enumerate(reference):
            total += len(row)
            if r < len(predicted):
                correct += sum(p == c for p, c in zip(predicted[r], row))
    return correct, total


@dataclass
class CellAccuracyConfig(FairseqDataclass):
    pass


@register_scorer("cell_accuracy", dataclass=CellAccuracyConfig)
class CellAccuracyScorer(BaseScorer):
    """``fairseq-generate --scoring cell_accuracy``: cell accuracy in percent of tables
    printed as ``a : b | c : d``."""

    def counts(self) -> Tuple[int, int]:
        return cell_accuracy_counts([parse_linearized(p) for p in self.pred],
                                    [parse_linearized(r) for r in self.ref])

    def score(self) -> float:
        correct, total = self.counts()
        return 100.0 * correct / max(total, 1)

    def result_string(self) -> str:
        correct, total = self.counts()
        return f"cell_accuracy = {self.score():.2f} ({correct}/{total} cells)"
