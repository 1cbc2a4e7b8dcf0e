"""One row under one template -> one example, by asking each slot's modality.

Token slots join the text stream, feature slots become tensors for their adapters,
and slots attached to a feature slot (a box on its image) are moved by that slot's
preprocessing before they become tokens. Every problem with a cell is a ``DataError``
naming the file, line and column.
"""
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from ..decoding.label_trie import ClosedSet
from ..instruction import Slot
from ..modalities import Context, Modality, get_modality
from ..modalities.base import TOKENS
from ..plan import TaskPlan, TemplatePlan
from .features import SlotFeatures
from .table import located, required_cell
from .vocabulary import Vocabulary, normalize_whitespace


class Example(NamedTuple):
    id: int
    source: List[int]  # the text stream: bos, literals and token slots, eos
    prefix: List[int]  # forced decoder tokens, no loss
    target: Any  # token ids, or frames (T x F); None when rows have no target (inference)
    target_input: Any  # what the decoder reads for the target (noisy tokens in training)
    reference: Any  # the target as metrics compare it; None without target
    features: Tuple[SlotFeatures, ...]  # one per feature slot, for its adapter
    output_context: Any  # what the target's postprocessing needs (an image size, ...)


class Shape(NamedTuple):
    """What an example costs, without building it."""

    text: int  # tokens of the encoder's text stream, bos and eos included
    features: List[int]  # encoder positions of each feature slot
    decoder: int  # forced prefix + target + eos


class ExampleBuilder:
    """Args:
        plan: the task plan with columns bound.
        vocab: the shared vocabulary.
        settings: run settings per modality name (``Modality.settings``).
        closed_set: labels of the target if it is ``closed_set``.
        path: the data file (named by errors).
        base_dir: where relative paths in cells are resolved.
        train: apply noise and augmentation (when given a generator and a seed).
        with_target: rows carry the target column (False for inference).
    """

    def __init__(self, plan: TaskPlan, vocab: Vocabulary,
                 settings: Mapping[str, Mapping[str, Any]], closed_set: Optional[ClosedSet],
                 path: str, base_dir: str, train: bool = False, with_target: bool = True):
        self.vocab, self.path, self.with_target = vocab, path, with_target
        self.contexts = {name: Context(vocab, settings.get(name, {}), closed_set, path,
                                       base_dir, train)
                         for name in {s.modality for t in plan.templates for s in t.slots}}
        self._literals: Dict[str, List[int]] = {}

    def read(self, row: Mapping[str, Any], template: TemplatePlan, line: Optional[int],
             decode: bool = True, values: Optional[Dict[Slot, Any]] = None) -> Dict[Slot, Any]:
        """Each slot's value (the target's only with targets), checked against its anchor.

        Args:
            decode: decode cells in full; otherwise check them as cheaply as a scan of a
                whole file can afford (an image is not decoded).
            values: values already read from this row (alternatives share slots); filled in.
        """
        values = {} if values is None else values
        for slot in template.slots:
            if slot not in values and (self.with_target or slot is not template.target):
                cell = required_cell(row, slot, self.path, line)
                values[slot] = self._located(lambda: _modality(slot).read(
                    cell, slot, self.contexts[slot.modality], decode), slot, line)
        for slot in template.slots:
            anchor = _modality(slot).anchor(slot, template)
            if slot in values and anchor is not None:
                self._located(lambda: _modality(slot).check_on_anchor(
                    values[slot], values[anchor], slot, self.contexts[slot.modality]),
                    slot, line)
        return values

    def shape(self, values: Mapping[Slot, Any], template: TemplatePlan) -> Shape:
        text = 2 + sum(self._size(part, values, "num_tokens") for part in template.encoder
                       if not _is_feature(part))  # + bos, eos
        features = [self._size(s, values, "num_positions") for s in template.feature_slots]
        prefix = sum(self._size(part, values, "num_tokens") for part in template.prefix)
        target = (self._size(template.target, values, "target_length")
                  if self.with_target else 0)
        return Shape(text, features, prefix + target + 1)

    def reference(self, values: Mapping[Slot, Any], template: TemplatePlan) -> Any:
        target = template.target
        return _modality(target).reference(values[target], target,
                                           self.contexts[target.modality])

    def build(self, row: Mapping[str, Any], template: TemplatePlan, line: Optional[int],
              rng: Optional[np.random.Generator] = None, seed: Optional[int] = None,
              index: int = -1) -> Example:
        """The example of ``row``; ``rng`` and ``seed`` drive training noise and
        augmentation (feature slot k is augmented with ``seed + k``)."""
        values = self.read(row, template, line)
        placed = dict(values)  # attached slots as their anchor's preprocessing left them
        features = []
        for k, slot in enumerate(template.feature_slots):
            modality, ctx = _modality(slot), self.contexts[slot.modality]
            attached = [s for s in values if _modality(s).anchor(s, template) is slot]
            tensor, moved = self._located(lambda: modality.features(
                values[slot], slot, ctx, [values[s] for s in attached],
                None if seed is None else seed + k), slot, line)
            placed.update(zip(attached, moved))
            features.append(SlotFeatures(k, slot.modality, modality.adapter_key(slot, ctx.settings),
                                         tensor))
        dictionary = self.vocab.dictionary
        source = [dictionary.bos()] + self._tokens(template.encoder, placed, rng) + [dictionary.eos()]
        prefix = self._tokens(template.prefix, placed, None)
        target_slot = template.target
        target_modality = _modality(target_slot)
        example = Example(index, source, prefix, None, None, None, tuple(features),
                          target_modality.output_context(target_slot, template, values))
        if not self.with_target:
            return example
        target = target_modality.target(placed[target_slot], target_slot,
                                        self.contexts[target_slot.modality], rng)
        return example._replace(target=target.values, target_input=target.inputs,
                                reference=self.reference(values, template))

    def _tokens(self, parts, placed: Mapping[Slot, Any], rng) -> List[int]:
        tokens: List[int] = []
        for part in parts:
            if isinstance(part, str):
                tokens += self._literal(part)
            elif not _is_feature(part):  # features reach the encoder through adapters
                tokens += _modality(part).tokens(placed[part], part,
                                                 self.contexts[part.modality], rng)
        return tokens

    def _size(self, part, values: Mapping[Slot, Any], measure: str) -> int:
        if isinstance(part, str):
            return len(self._literal(part))
        return getattr(_modality(part), measure)(values[part], part,
                                                 self.contexts[part.modality])

    def _literal(self, text: str) -> List[int]:
        if text not in self._literals:
            self._literals[text] = self.vocab.encode(normalize_whitespace(text))
        return self._literals[text]

    def _located(self, read, slot: Slot, line: Optional[int]):
        return located(read, self.path, line, slot.column)


def _modality(slot: Slot) -> Modality:
    return get_modality(slot.modality)


def _is_feature(part) -> bool:
    return isinstance(part, Slot) and _modality(part).input_kind != TOKENS
