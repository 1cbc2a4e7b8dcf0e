"""BOX: location tokens on an image (``modality.py``) and Acc@IoU, for validation and
``fairseq-generate --scoring box_acc`` (``accuracy.py``)."""
from .accuracy import BoxAccuracyScorer  # noqa: F401  (fairseq registration)
from .modality import BOX_LENGTH, BoxModality, BoxOptions, bin_symbol, parse_box, quantize

__all__ = ["BOX_LENGTH", "BoxModality", "BoxOptions", "bin_symbol", "parse_box", "quantize"]
