"""Feature inputs of a batch: each example's feature slots, grouped for their adapters.

``net_input["features"]`` is a list of groups, one per adapter and batchable shape::

    {"adapter": "image_resnet",          # the encoder's adapter key
     "slots": N x 2 long tensor,         # (row, feature slot index) of each item
     "inputs": {...}}                    # the modality's collated tensors (its adapter's kwargs)

Rows without a slot of some kind have nothing there: no placeholder tensors.
"""
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import torch

from ..modalities import get_modality


class SlotFeatures(NamedTuple):
    slot: int  # index among the template's feature slots (its slot embedding)
    modality: str
    adapter: str  # the encoder's adapter key
    values: Any  # the modality's features (a uint8 image, ...)


def collate_features(rows: Sequence[Sequence[SlotFeatures]]) -> List[Dict[str, Any]]:
    """The groups of ``net_input["features"]`` for the rows' feature slots."""
    groups: Dict[Tuple[str, Any], List[Tuple[int, SlotFeatures]]] = {}
    for row, features in enumerate(rows):
        for feature in features:
            key = (feature.adapter, get_modality(feature.modality).batch_key(feature.values))
            groups.setdefault(key, []).append((row, feature))
    collated = []
    for (adapter, _), members in groups.items():
        modality = get_modality(members[0][1].modality)
        collated.append({
            "adapter": adapter,
            "slots": torch.tensor([(row, f.slot) for row, f in members], dtype=torch.long),
            "inputs": modality.collate([f.values for _, f in members]),
        })
    return collated
