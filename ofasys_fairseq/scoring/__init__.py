"""Scorers for ``fairseq-generate --scoring``."""
from .exact_match import ExactMatchScorer  # noqa: F401  (fairseq registration)
