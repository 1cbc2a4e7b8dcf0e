"""From a parsed Instruction to a task plan: what the encoder reads, what the
decoder is given as a forced prefix, and the one target slot it learns.

Decoder-side layout: literal text and ``no_loss`` slots form a prefix (teacher
forced in training, forced through ``prefix_tokens`` at inference, never
scored), followed by exactly one target slot that ends the instruction.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .data.image import DEFAULT_IMAGE_RECIPE, IMAGE_RECIPES
from .instruction import Instruction, InstructionError, Slot
from .models.adapters.image import IMAGE_ADAPTORS

# Modalities whose data pipeline and adapter exist; the others parse, and the
# plan says they are not supported yet.
IMPLEMENTED_MODALITIES = ("TEXT", "IMAGE", "BOX")
ENCODER_ONLY_MODALITIES = ("IMAGE",)  # no image generation
ENCODER_ONLY_ATTRS = ("mask_ratio",)
DECODER_ONLY_ATTRS = ("no_loss", "closed_set")
# the values ``preprocess=`` and ``adaptor=`` accept, per modality (first: default)
SLOT_CHOICES = {
    "TEXT": {"preprocess": ("text",), "adaptor": ("text",)},
    "BOX": {"preprocess": ("box",), "adaptor": ("text",)},  # location tokens in the text
    "IMAGE": {"preprocess": tuple(IMAGE_RECIPES), "adaptor": IMAGE_ADAPTORS},
}

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
    def image_slots(self) -> List[Slot]:
        """IMAGE slots in order; the first is the image that BOX slots point into."""
        return [s for s in self.slots if s.modality == "IMAGE"]


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
        if slot.modality not in IMPLEMENTED_MODALITIES:
            _fail(instruction, slot.position,
                  f"{slot.modality} slots are not supported yet "
                  f"(supported: {', '.join(IMPLEMENTED_MODALITIES)})")
        if slot.side == "decoder" and slot.modality in ENCODER_ONLY_MODALITIES:
            _fail(instruction, slot.position,
                  f"{slot.modality} slots are inputs only: put them before '->'")
        _check_choices(instruction, slot)
        wrong_side = DECODER_ONLY_ATTRS if slot.side == "encoder" else ENCODER_ONLY_ATTRS
        for attr in wrong_side:
            if attr in slot.attrs:
                _fail(instruction, slot.attr_positions.get(attr, slot.position),
                      f"'{attr}' does not apply to {slot.side} slots")

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
    for part in template.decoder[:index]:
        if isinstance(part, Slot) and part.has("closed_set"):
            _fail(instruction, part.attr_positions.get("closed_set", part.position),
                  "'closed_set' applies to the target slot, not to no_loss slots")
    plan = TemplatePlan(tuple(template.encoder), tuple(template.decoder[:index]), target)
    _check_boxes(instruction, plan)
    return plan


def _check_choices(instruction: Instruction, slot: Slot) -> None:
    for attr, choices in SLOT_CHOICES[slot.modality].items():
        if attr in slot.attrs and slot.get(attr) not in choices:
            _fail(instruction, slot.attr_positions.get(attr, slot.position),
                  f"{slot.modality} {attr}={slot.get(attr)!r} is unknown; expected one of "
                  f"{', '.join(choices)}")


def _check_boxes(instruction: Instruction, plan: TemplatePlan) -> None:
    boxes = [s for s in plan.slots if s.modality == "BOX"]
    if not boxes:
        return
    if not plan.image_slots:
        _fail(instruction, boxes[0].position,
              f"{boxes[0]} needs an IMAGE slot: box coordinates are pixels of that image")
    image = plan.image_slots[0]
    recipe = image.get("preprocess") or DEFAULT_IMAGE_RECIPE
    if not IMAGE_RECIPES[recipe][1]:
        _fail(instruction, image.attr_positions.get("preprocess", image.position),
              f"preprocess={recipe} cannot move boxes with the image (RandAugment); use "
              f"{' or '.join(r for r, (_, moves) in IMAGE_RECIPES.items() if moves)}")


def _check_one_target(instruction: Instruction, templates: Sequence[TemplatePlan]) -> None:
    """Alternatives differ in wording only: the same target and the same images."""
    first = templates[0]
    for template in templates[1:]:
        if template.target != first.target:
            _fail(instruction, template.target.position,
                  f"every alternative must have the same target slot, "
                  f"expected {first.target} like the first one")
        if template.image_slots != first.image_slots:  # Slot equality ignores positions
            _fail(instruction, (template.image_slots or template.slots)[0].position,
                  f"every alternative must read the same IMAGE slots in the same order, "
                  f"expected {', '.join(map(str, first.image_slots)) or 'none'} like the "
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
