"""``fairseq-generate --scoring sacrebleu_multi``: corpus sacreBLEU over every reference
of each row (fairseq's own ``sacrebleu`` scorer reads one)."""
from dataclasses import dataclass
from itertools import zip_longest
from typing import List, Optional, Sequence

import sacrebleu
from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import register_scorer

from .references import MultiReferenceScorer


def reference_streams(references: Sequence[Sequence[str]]) -> List[List[Optional[str]]]:
    """sacreBLEU's reference streams: stream k holds each row's k-th reference, None
    where a row has fewer (sacreBLEU skips those)."""
    return [list(stream) for stream in zip_longest(*references, fillvalue=None)]


@dataclass
class SacrebleuMultiConfig(FairseqDataclass):
    pass


@register_scorer("sacrebleu_multi", dataclass=SacrebleuMultiConfig)
class SacrebleuMultiScorer(MultiReferenceScorer):
    name = "BLEU"

    def score(self) -> float:
        if not self.pred:
            return 0.0
        return sacrebleu.corpus_bleu(self.pred, reference_streams(self.references)).score
