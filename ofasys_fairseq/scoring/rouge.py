"""ROUGE-L through the maintained ``rouge-score`` package, as Super-NaturalInstructions
and Gigaword report it: the F-measure of the longest common subsequence with Porter
stemming, the best over a row's references."""
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import register_scorer
from rouge_score import rouge_scorer

from .references import MultiReferenceScorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure in [0, 1] against the closest reference.

    Args:
        prediction: the generated text.
        references: the row's reference texts.
    """
    if not references:
        raise ValueError("ROUGE-L needs at least one reference")
    return _scorer().score_multi(list(references), prediction)["rougeL"].fmeasure


@dataclass
class RougeLConfig(FairseqDataclass):
    pass


@register_scorer("rouge_l", dataclass=RougeLConfig)
class RougeLScorer(MultiReferenceScorer):
    """``fairseq-generate --scoring rouge_l``: mean ROUGE-L x 100 over the rows."""

    name = "ROUGE-L"

    def example_score(self, prediction: str, references: Sequence[str]) -> float:
        return rouge_l(prediction, references)
