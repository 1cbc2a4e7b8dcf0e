"""The registry of modalities: the one place the core looks a slot type up.

    from ofasys_fairseq.modalities import Modality, register_modality

    register_modality(MyModality())

Registering also teaches the instruction parser the type and its attributes. The
built-in modalities register themselves when ``ofasys_fairseq`` is imported; a
``--user-dir`` package that imports ``ofasys_fairseq`` can add its own.
"""
from typing import Dict, List

from ..instruction import MODALITIES as SLOT_GRAMMAR
from .base import DECODER, ENCODER, Modality

_REGISTRY: Dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    """Register ``modality`` under ``modality.name``.

    A name may be registered once; a type whose grammar was only declared ahead of its
    implementation (``implemented = False``) may be replaced by an implementation.
    """
    name = modality.name
    if not name or not name.isupper() or not name.isidentifier():
        raise ValueError(f"a modality name is an upper-case identifier, got {name!r}")
    if not set(modality.sides) <= {ENCODER, DECODER} or not modality.sides:
        raise ValueError(f"{name}: sides must be a non-empty subset of {(ENCODER, DECODER)}")
    known = _REGISTRY.get(name)
    if known is not None and known.implemented:
        raise ValueError(f"modality {name} is already registered ({type(known).__name__})")
    _REGISTRY[name] = modality
    SLOT_GRAMMAR[name] = modality.all_attributes()
    return modality


def get_modality(name: str) -> Modality:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no modality {name!r} is registered (registered: "
                       f"{', '.join(_REGISTRY)})") from None


def registered_modalities() -> List[Modality]:
    """Every registered modality, in registration order."""
    return list(_REGISTRY.values())
