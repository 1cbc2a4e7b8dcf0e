"""Cell accuracy of output tables: the cells an output gets right at their row and
column, over the cells of the output or the reference at each place, whichever has more
(a missing or an extra row or cell counts as a wrong cell)."""
from dataclasses import dataclass
from typing import Sequence, Tuple

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import BaseScorer, register_scorer

from .table import Rows, parse_linearized


def cell_accuracy_counts(predictions: Sequence[Rows], references: Sequence[Rows]
                         ) -> Tuple[int, int]:
    """(cells right, cells counted) over pairs of tables."""
    correct = total = 0
    for predicted, reference in zip(predictions, references):
        for r in range(max(len(predicted), len(reference))):
            out = predicted[r] if r < len(predicted) else []
            ref = reference[r] if r < len(reference) else []
            total += max(len(out), len(ref))
            correct += sum(p == c for p, c in zip(out, ref))
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
