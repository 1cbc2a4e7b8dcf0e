"""Scorers for ``fairseq-generate --scoring`` (every reference of a row: see
``references.py``) and the validation metrics' statistics (modalities add their own:
BOX's ``box_acc``)."""
from .bleu import SacrebleuMultiScorer  # noqa: F401  (fairseq registration)
from .cider import CiderDScorer  # noqa: F401
from .exact_match import ExactMatchScorer  # noqa: F401
from .rouge import RougeLScorer  # noqa: F401
from .vqa_score import VqaScoreScorer  # noqa: F401
from .wer import PerScorer  # noqa: F401
