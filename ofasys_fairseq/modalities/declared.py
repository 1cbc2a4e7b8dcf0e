"""Slot types whose grammar is declared ahead of their implementation.

Instructions with them parse (with every attribute checked), and the plan refuses them
as not supported yet. An implementation replaces the declaration by registering a
modality of the same name.
"""
from ..instruction import AttrSpec
from .base import Modality
from .text import CLOSED_SET


class DeclaredModality(Modality):
    implemented = False

    def __init__(self, name: str, **attributes: AttrSpec):
        self.name, self.attributes = name, attributes


DECLARED = [
    DeclaredModality("VIDEO",
                     num_frames=AttrSpec("int", "frames sampled from each clip", min=1)),
    DeclaredModality(
        "MOTION", min_length=AttrSpec("int", "shortest motion kept, in frames", min=1),
        max_length=AttrSpec("int", "longest motion kept, in frames", min=1),
        sample_rate=AttrSpec("float", "frames per second after resampling", min=0,
                             min_exclusive=True)),
    DeclaredModality("CATEGORY", closed_set=CLOSED_SET),
]
