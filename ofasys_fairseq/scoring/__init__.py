"""Scorers for ``fairseq-generate --scoring`` and the validation metrics' statistics
(modalities add their own: BOX's ``box_acc``)."""
from .exact_match import ExactMatchScorer  # noqa: F401  (fairseq registration)
from .cider import CiderDScorer  # noqa: F401  (fairseq registration)
