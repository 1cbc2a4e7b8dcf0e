"""Every reference of a row for fairseq-generate's scorers.

fairseq-generate hands a scorer one reference per row: the target tokens, decoded. A
target cell may hold several references (COCO's five captions, VQA's ten answers): the
instruction task publishes the references of each batch it decodes (``publish``), and
the scorers here take them row by row, in the order fairseq-generate scores the rows,
checking that each row's first reference is the target fairseq-generate shows.
fairseq-generate builds its scorer before it decodes the first batch.
"""
from collections import deque
from typing import Any, Deque, List, Optional, Sequence

from fairseq.scoring import BaseScorer

_batch: Deque[Any] = deque()  # the references of the rows being scored, in row order


def reference_list(reference: Any) -> List[str]:
    """A row's text references as a list (a single reference is a list of one)."""
    return [reference] if isinstance(reference, str) else list(reference)


def _text_references(reference: Any) -> Optional[List[str]]:
    is_texts = isinstance(reference, list) and all(isinstance(r, str) for r in reference)
    return [reference] if isinstance(reference, str) else reference if is_texts else None


def publish(references: Sequence[Any]) -> None:
    """The references of the batch being decoded, one entry per row."""
    _batch.clear()
    _batch.extend(references)


def take(target: str) -> List[str]:
    """The next row's references; ``[target]`` when no batch was published."""
    if not _batch:
        return [target]
    references = _text_references(_batch.popleft())
    if references is None:  # not text (a box, a table): fairseq-generate's target is all
        return [target]
    if references and " ".join(str(references[0]).split()) != " ".join(target.split()):
        raise ValueError(f"the row fairseq-generate scores ({target!r}) is not the next "
                         f"decoded row (first reference {references[0]!r}); its references "
                         f"cannot be matched")
    return references


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
