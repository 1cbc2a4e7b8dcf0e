"""The encoder's token adapter; feature adapters come from their modalities
(``Modality.build_adapters``), all returning ``AdapterOutput``."""
from ...modalities.base import AdapterOutput
from .tokens import TokenAdapter

__all__ = ["AdapterOutput", "TokenAdapter"]
