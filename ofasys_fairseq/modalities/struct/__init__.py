"""STRUCT: tables in and out (``modality.py``), read from JSON, CSV/TSV files or
linearized text (``table.py``), scored by cell accuracy (``accuracy.py``)."""
from .accuracy import CellAccuracyScorer  # noqa: F401  (fairseq registration)
from .modality import StructModality
from .table import linearize, parse_linearized, read_table

__all__ = ["StructModality", "linearize", "parse_linearized", "read_table"]
