"""From a parsed Instruction to a task plan: what the encoder reads, what the
decoder is given as a forced prefix, and the one target slot it learns.

Decoder-side layout: literal text and ``no_loss`` slots form a prefix (teacher
forced in training, forced through ``prefix_tokens`` at inference, never
scored), followed by exactly one target slot that ends the instruction.

What a slot type allows (sides, attribute values, rules involving other slots) comes
from its registered modality.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .instruction import Instruction, InstructionError, Slot
from .modalities import get_modality, registered_modalities
from .modalities.base import DECODER, FEATURES, MAX_FEATURE_SLOTS, TOKENS

Part = Union[str, Slot]


@dataclasses.dataclass(frozen=True)
class TemplatePlan:
    """One alternative of the instruction, split into what each stage consumes."""

    encoder: Tuple[Part, ...]
    prefix: Tuple[Part, ...]
    target: Slot

    @property
    def slots(self) -> List[Slot]:
        return [p for p in self.encoder + self.prefix + (self.target,) if isinstance(p, Slot)]

    @property
    def feature_slots(self) -> List[Slot]:
        """The encoder slots an adapter embeds (images, ...), in order: the k-th gets
        slot embedding k."""
        return [p for p in self.encoder
                if isinstance(p, Slot) and get_modality(p.modality).input_kind == FEATURES]


class TaskPlan:
    """A validated instruction: one or more templates sharing one target.

    Args:
        instruction: the parsed instruction (alternatives joined by ``|||``).
    """

    def __init__(self, instruction: Instruction, templates: Sequence[TemplatePlan]):
        self.instruction = instruction
        self.templates = tuple(templates)

    @classmethod
    def parse(cls, text: str) -> "TaskPlan":
        instruction = Instruction.parse(text)
        templates = [_plan_template(instruction, t) for t in instruction.alternatives]
        _check_one_target(instruction, templates)
        return cls(instruction, templates)

    @property
    def target(self) -> Slot:
        return self.templates[0].target

    @property
    def text(self) -> str:
        return self.instruction.text

    def input_columns(self) -> List[str]:
        """Columns read at inference (everything but the target)."""
        return _unique(s.column for t in self.templates for s in t.slots
                       if s is not t.target and s.column is not None)

    def columns(self) -> List[str]:
        return _unique(s.column for t in self.templates for s in t.slots if s.column is not None)

    def bind_columns(self, file_columns: Sequence[str]) -> "TaskPlan":
        """Fill unnamed slots (``[TEXT]``) positionally from the file's columns:
        the i-th slot of a template reads the i-th column."""
        templates = []
        for template in self.templates:
            names: Dict[int, str] = {}
            for i, slot in enumerate(template.slots):
                if slot.column is None:
                    if i >= len(file_columns):
                        _fail(self.instruction, slot.position,
                              f"unnamed slot {i + 1} has no column {i + 1} to read: the data "
                              f"has {len(file_columns)} columns ({', '.join(file_columns)})")
                    names[id(slot)] = file_columns[i]
            templates.append(_rename(template, names))
        # unnamed targets compare equal before binding, not necessarily after
        _check_one_target(self.instruction, templates)
        return TaskPlan(self.instruction, templates)

    def __str__(self) -> str:
        return str(self.instruction)


def _plan_template(instruction: Instruction, template) -> TemplatePlan:
    for slot in template.slots:
        _check_slot(instruction, slot)
    targets = [(i, p) for i, p in enumerate(template.decoder)
               if isinstance(p, Slot) and not p.has("no_loss")]
    if not targets:
        _fail(instruction, _end_of(instruction, template),
              "the decoder side (after '->') needs a target slot without no_loss")
    if len(targets) > 1:
        _fail(instruction, targets[1][1].position,
              "only one target slot per instruction is supported: mark the other decoder "
              "slots no_loss")
    index, target = targets[0]
    if index != len(template.decoder) - 1:
        _fail(instruction, target.position,
              f"the target slot {target} must end the instruction: the decoder text after "
              "it could not be forced at inference")
    if get_modality(target.modality).output_kind is None:
        _fail(instruction, target.position, f"{target.modality} slots cannot be a target")
    for part in template.decoder[:index]:
        if not isinstance(part, Slot):
            continue
        if part.has("closed_set"):
            _fail(instruction, part.attr_positions.get("closed_set", part.position),
                  "'closed_set' applies to the target slot, not to no_loss slots")
        if get_modality(part.modality).input_kind != TOKENS:
            _fail(instruction, part.position,
                  f"{part} cannot be forced decoder context: only token slots can be no_loss")
    plan = TemplatePlan(tuple(template.encoder), tuple(template.decoder[:index]), target)
    if len(plan.feature_slots) > MAX_FEATURE_SLOTS:
        _fail(instruction, plan.feature_slots[MAX_FEATURE_SLOTS].position,
              f"at most {MAX_FEATURE_SLOTS} feature slots (images, ...) per instruction")
    for slot in plan.slots:
        problem = get_modality(slot.modality).check_slot(slot, plan)
        if problem is not None:
            _fail(instruction, *problem)
    return plan


def _check_slot(instruction: Instruction, slot: Slot) -> None:
    """What the slot's modality allows, on its own: implemented, on this side, with
    attributes of this side and values it offers."""
    modality = get_modality(slot.modality)
    if not modality.implemented:
        supported = ", ".join(m.name for m in registered_modalities() if m.implemented)
        _fail(instruction, slot.position,
              f"{slot.modality} slots are not supported yet (supported: {supported})")
    if slot.side not in modality.sides:
        where = ("inputs only: put them before '->'" if slot.side == DECODER
                 else "outputs only: put them after '->'")
        _fail(instruction, slot.position, f"{slot.modality} slots are {where}")
    specs = modality.all_attributes()
    for attr in slot.attrs:
        if slot.side not in specs[attr].sides:
            _fail(instruction, slot.attr_positions.get(attr, slot.position),
                  f"'{attr}' does not apply to {slot.side} slots")
    for attr, choices in modality.choices.items():
        if attr in slot.attrs and slot.get(attr) not in choices:
            _fail(instruction, slot.attr_positions.get(attr, slot.position),
                  f"{slot.modality} {attr}={slot.get(attr)!r} is unknown; expected one of "
                  f"{', '.join(choices)}")


def _check_one_target(instruction: Instruction, templates: Sequence[TemplatePlan]) -> None:
    """Alternatives differ in wording only: the same target and the same feature inputs."""
    first = templates[0]
    for template in templates[1:]:
        if template.target != first.target:
            _fail(instruction, template.target.position,
                  f"every alternative must have the same target slot, "
                  f"expected {first.target} like the first one")
        if template.feature_slots != first.feature_slots:  # Slot equality ignores positions
            _fail(instruction, (template.feature_slots or template.slots)[0].position,
                  f"every alternative must read the same feature slots in the same order, "
                  f"expected {', '.join(map(str, first.feature_slots)) or 'none'} like the "
                  f"first one")


def _rename(template: TemplatePlan, names: Dict[int, str]) -> TemplatePlan:
    def named(part: Part) -> Part:
        if isinstance(part, Slot) and id(part) in names:
            return dataclasses.replace(part, column=names[id(part)])
        return part

    return TemplatePlan(tuple(map(named, template.encoder)), tuple(map(named, template.prefix)),
                        named(template.target))


def _end_of(instruction: Instruction, template) -> int:
    end = instruction.text.find("|||", template.position)
    return len(instruction.text) if end < 0 else end


def _unique(items) -> List[str]:
    return list(dict.fromkeys(items))


def _fail(instruction: Instruction, position: Optional[int], message: str):
    raise InstructionError(message, instruction.text, position if position is not None else 0)
