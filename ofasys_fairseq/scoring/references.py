"""Every reference of a row for fairseq-generate's scorers.

fairseq-generate hands a scorer one reference per row: the target tokens, decoded. A
target cell may hold several references (COCO's five captions, VQA's ten answers): the
instruction task publishes the references of each batch it decodes (``publish``), and
the scorers here take them row by row, in the order fairseq-generate scores the rows (it
builds its scorer before it decodes the first batch, then scores every row of a batch
before it decodes the next). The row's target that fairseq-generate passes along is not
compared: it is the first reference (with ``closed_set``, the first in the label set),
printed with ``<<unk>>`` where the vocabulary has no piece.
"""
from collections import deque
from typing import Any, Deque, List, Optional, Sequence

from fairseq.scoring import BaseScorer

_batch: Deque[Any] = deque()  # the references of the rows being scored, in row order


def reference_list(reference: Any) -> Optional[List[str]]:
    """A row's text references as a list (a single reference is a list of one); None for
    a reference of another kind (a box, a table)."""
    if isinstance(reference, str):
        return [reference]
    is_texts = isinstance(reference, list) and all(isinstance(r, str) for r in reference)
    return list(reference) if is_texts else None


def publish(references: Sequence[Any]) -> None:
    """The references of the batch being decoded, one entry per row."""
    _batch.clear()
    _batch.extend(references)


def take(target: str) -> List[str]:
    """The next row's references; ``[target]`` when no batch was published or the row's
    reference is not text."""
    references = reference_list(_batch.popleft()) if _batch else None
    return references or [target]


class MultiReferenceScorer(BaseScorer):
    """A fairseq-generate scorer that reads every reference of each row: the mean of
    ``example_score`` x 100."""

    name = ""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.references: List[List[str]] = []
        publish([])  # only rows decoded from now on are scored (fairseq-generate's order)

    def add_string(self, ref: str, pred: str) -> None:
        super().add_string(ref, pred)
        self.references.append(take(ref))

    def example_score(self, prediction: str, references: Sequence[str]) -> float:
        raise NotImplementedError

    def score(self) -> float:
        if not self.pred:
            return 0.0
        return 100.0 * sum(map(self.example_score, self.pred, self.references)) / len(self.pred)

    def result_string(self) -> str:
        return f"{self.name} = {self.score():.2f}"
