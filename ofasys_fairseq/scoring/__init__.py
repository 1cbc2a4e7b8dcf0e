"""Scorers for ``fairseq-generate --scoring``."""
from .exact_match import ExactMatchScorer  # noqa: F401  (fairseq registration)
from .cider import CiderDScorer  # noqa: F401  (fairseq registration)
from .box_accuracy import BoxAccuracyScorer  # noqa: F401  (fairseq registration)
