"""The instruction language: one line that describes a whole multimodal task.

    [IMAGE:img] what does the image describe? -> [TEXT:cap]

Grammar (informal)::

    instruction := alternative ('|||' alternative)*
    alternative := side '->' side              # exactly one unescaped '->'
    side        := (literal | slot)*           # either side may be empty
    slot        := '[' TYPE [':' column] (',' attribute)* ']'
    attribute   := flag | name '=' value

* TYPE is a registered modality (upper-case; ``MODALITIES`` holds their grammar).
  Each type declares the attributes it accepts (``AttrSpec``): flags are bare words (``no_loss``),
  the others need ``name=value`` and are converted to int, float or str and
  range-checked.  Whitespace around types, columns, names and values is dropped.
* Literal text is kept as written, except that the whitespace next to ``->``,
  ``|||`` and the ends of the text belongs to no part and is dropped.  The
  escapes ``\\[  \\]  \\\\  \\|  \\->`` write those characters literally; any
  other backslash is an error.  A single ``|`` or ``-`` needs no escape.
* Every problem raises ``InstructionError``, which carries the 0-based position
  of the offending character and prints a caret under it.

``str()`` of a parsed ``Instruction`` is its canonical form, which parses back
to an equal ``Instruction``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Mapping, NoReturn

ARROW = "->"
SEPARATOR = "|||"
_ESCAPABLE = "[]\\|"  # plus the two-character ARROW
_COLUMN_FORBIDDEN = "[],=\\:"
_VALUE_FORBIDDEN = "=\\"  # '[', ']' and ',' never reach a value: they end it


@dataclass(frozen=True)
class AttrSpec:
    """What one slot attribute accepts."""

    kind: str  # "flag", "int", "float" or "str"
    description: str
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple[str, ...] | None = None
    sides: tuple[str, ...] = ("encoder", "decoder")  # where it applies (checked by the plan)

    @property
    def placeholder(self) -> str:
        return f"<{self.kind}>"

    def bounds(self) -> str:
        low = f"{self.min:g}" if self.min is not None else None
        high = f"{self.max:g}" if self.max is not None else None
        if low is not None and high is not None:
            return f"in {'(' if self.min_exclusive else '['}{low}, {high}]"
        if low is not None:
            return f"{'>' if self.min_exclusive else '>='} {low}"
        return f"<= {high}"

    def convert(self, name: str, raw: str) -> object:
        """The typed value of ``raw``; raises ValueError with a readable reason."""
        if self.kind == "int":
            digits = raw[1:] if raw[:1] in "+-" else raw
            if not (digits.isascii() and digits.isdigit()):
                raise ValueError(f"attribute {name!r} expects an integer, got {raw!r}")
            if len(digits) > 1000:  # int() refuses very long strings anyway
                raise ValueError(f"attribute {name!r}: integer is too long")
            value: object = int(raw)
        elif self.kind == "float":
            try:
                value = float(raw) if raw.isascii() else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):  # nan would slip through every range check
                raise ValueError(f"attribute {name!r} expects a finite number, got {raw!r}")
        else:
            value = raw
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"attribute {name!r} must be one of {', '.join(self.choices)}; got {raw!r}")
        too_low = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
        too_high = self.max is not None and value > self.max
        if too_low or too_high:
            raise ValueError(f"attribute {name!r} must be {self.bounds()}, got {raw}")
        return value


# slot type -> its attributes: filled by ``modalities.register_modality``, which every
# modality (built-in or from a --user-dir package) goes through
MODALITIES: dict[str, dict[str, AttrSpec]] = {}


class InstructionError(ValueError):
    """A problem in an instruction, at ``position`` (0-based index into ``instruction``)."""

    def __init__(self, message: str, instruction: str, position: int):
        super().__init__(message, instruction, position)  # args make it picklable
        self.message = message
        self.instruction = instruction
        self.position = position

    def __str__(self) -> str:
        # Non-printable characters (newlines, tabs) would break the caret alignment.
        shown = "".join(char if char.isprintable() else " " for char in self.instruction)
        return f"{self.message}\n  {shown}\n  {' ' * self.position}^"


@dataclass(frozen=True)
class Slot:
    """One ``[TYPE:column,attributes]`` placeholder."""

    modality: str
    column: str | None
    attrs: Mapping[str, object] = field(default_factory=dict)
    side: str = "encoder"  # or "decoder"
    position: int = field(default=-1, compare=False)  # index of the '['
    attr_positions: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __hash__(self) -> int:  # attrs is a dict, so hash its items
        return hash((self.modality, self.column, self.side, frozenset(self.attrs.items())))

    def has(self, flag: str) -> bool:
        return self.attrs.get(flag) is True

    def get(self, key: str, default: object = None) -> object:
        return self.attrs.get(key, default)

    def __str__(self) -> str:
        head = self.modality if self.column is None else f"{self.modality}:{self.column}"
        attributes = (name if value is True else f"{name}={value}" for name, value in self.attrs.items())
        return "[" + ",".join([head, *attributes]) + "]"


@dataclass(frozen=True)
class Template:
    """One alternative: the encoder parts and the decoder parts, in order."""

    encoder: tuple[str | Slot, ...] = ()
    decoder: tuple[str | Slot, ...] = ()
    position: int = field(default=0, compare=False)  # offset of the alternative in the text

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(part for part in (*self.encoder, *self.decoder) if isinstance(part, Slot))

    def __str__(self) -> str:
        return " ".join(filter(None, (_render_side(self.encoder), ARROW, _render_side(self.decoder))))


@dataclass(frozen=True, repr=False)
class Instruction:
    """A parsed instruction; equality compares the alternatives, not the text."""

    text: str = field(compare=False)
    alternatives: tuple[Template, ...]

    @classmethod
    def parse(cls, text: str) -> Instruction:
        if not isinstance(text, str):
            raise TypeError(f"an instruction is a str, not {type(text).__name__}")
        return cls(text, _Parser(text).parse())

    @property
    def slots(self) -> list[Slot]:
        return [slot for template in self.alternatives for slot in template.slots]

    @property
    def encoder_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.side == "encoder"]

    @property
    def decoder_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.side == "decoder"]

    def __str__(self) -> str:
        return f" {SEPARATOR} ".join(map(str, self.alternatives))

    def __repr__(self) -> str:
        return f"Instruction.parse({self.text!r})"


def _escape(literal: str) -> str:
    # Backslash first, so the backslashes added after it are not doubled.
    for char in "\\[]|":
        literal = literal.replace(char, "\\" + char)
    return literal.replace(ARROW, "\\" + ARROW)


def _render_side(parts: tuple[str | Slot, ...]) -> str:
    return "".join(_escape(part) if isinstance(part, str) else str(part) for part in parts)


def _split(text: str, start: int, end: int, separator: str) -> list[tuple[int, str]]:
    """``text[start:end]`` split on a one-character separator, each piece with its offset."""
    pieces, piece_start = [], start
    for index in range(start, end):
        if text[index] == separator:
            pieces.append((piece_start, text[piece_start:index]))
            piece_start = index + 1
    pieces.append((piece_start, text[piece_start:end]))
    return pieces


def _stripped(offset: int, raw: str) -> tuple[int, str]:
    """The offset of raw's first non-space character, and raw without surrounding spaces."""
    kept = raw.lstrip()
    return offset + len(raw) - len(kept), kept.rstrip()


def _did_you_mean(name: str, known: Mapping[str, object]) -> str:
    guess = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {guess[0]!r}?" if guess else "expected one of " + ", ".join(known)


class _Parser:
    """Left-to-right scanner; every position it reports indexes the full text."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, message: str, position: int) -> NoReturn:
        raise InstructionError(message, self.text, position)

    def parse(self) -> tuple[Template, ...]:
        alternatives = [self.alternative()]
        while self.pos < len(self.text):  # alternative() stopped at a '|||'
            self.pos += len(SEPARATOR)
            alternatives.append(self.alternative())
        return tuple(alternatives)

    def alternative(self) -> Template:
        text, start = self.text, self.pos
        sides: list[list[str | Slot]] = [[]]
        literal: list[str] = []
        arrow_at = -1
        while self.pos < len(text) and not text.startswith(SEPARATOR, self.pos):
            char = text[self.pos]
            if char == "\\":
                literal.append(self.escape())
            elif text.startswith(ARROW, self.pos):
                if arrow_at >= 0:
                    self.fail(f"second '->' in one alternative (the first is at {arrow_at}; "
                              "write \\-> for a literal arrow)", self.pos)
                arrow_at = self.pos
                _flush(literal, sides[-1])
                sides.append([])
                self.pos += len(ARROW)
            elif char == "[":
                _flush(literal, sides[-1])
                sides[-1].append(self.slot("decoder" if arrow_at >= 0 else "encoder"))
            elif char == "]":
                self.fail("unmatched ']' (write \\] for a literal bracket)", self.pos)
            else:
                literal.append(char)
                self.pos += 1
        _flush(literal, sides[-1])
        if arrow_at < 0:
            self.no_arrow(start)
        encoder, decoder = (_strip_ends(side) for side in sides)
        return Template(encoder, decoder, position=start)

    def no_arrow(self, start: int) -> NoReturn:
        end = self.pos
        if self.text[start:end].strip():
            self.fail("missing '->' between the encoder and the decoder side", end)
        if start == 0 and end == len(self.text):
            self.fail("empty instruction: expected ENCODER -> DECODER", 0)
        # Point at the '|||' next to the empty alternative.
        self.fail("empty alternative around '|||'", end if end < len(self.text) else start - len(SEPARATOR))

    def escape(self) -> str:
        at = self.pos
        if self.text.startswith(ARROW, at + 1):
            self.pos += 1 + len(ARROW)
            return ARROW
        following = self.text[at + 1:at + 2]
        if not following:
            self.fail("lone '\\' at the end (write \\\\ for a literal backslash)", at)
        if following not in _ESCAPABLE:
            self.fail(f"bad escape: backslash before {following!r} (escapes are \\[ \\] \\\\ \\| \\->)", at)
        self.pos += 2
        return following

    def slot(self, side: str) -> Slot:
        open_at = close_at = self.pos
        while True:
            close_at += 1
            if close_at == len(self.text):
                self.fail("'[' is never closed (write \\[ for a literal bracket)", open_at)
            if self.text[close_at] == "]":
                break
            if self.text[close_at] == "[":
                self.fail(f"'[' inside a slot (is the ']' of the slot at {open_at} missing?)", close_at)
        self.pos = close_at + 1
        if not self.text[open_at + 1:close_at].strip():
            self.fail("empty slot: expected [TYPE] or [TYPE:column]", open_at)
        (head_at, head), *attribute_pieces = _split(self.text, open_at + 1, close_at, ",")
        colon = head.find(":")
        modality = self.modality(*_stripped(head_at, head if colon < 0 else head[:colon]))
        column = None if colon < 0 else self.column(head_at + colon, head[colon + 1:])
        attrs: dict[str, object] = {}
        positions: dict[str, int] = {}
        for piece_at, piece in attribute_pieces:
            name, name_at, value = self.attribute(modality, piece_at, piece, positions)
            attrs[name], positions[name] = value, name_at
        return Slot(modality, column, attrs, side, position=open_at, attr_positions=positions)

    def modality(self, at: int, name: str) -> str:
        if name in MODALITIES:
            return name
        if not name:
            self.fail("missing type: a slot starts with its TYPE, e.g. [TEXT:column]", at)
        # Upper-case first so that '[text:a]' suggests 'TEXT'.
        hint = _did_you_mean(name.upper(), MODALITIES)
        if hint.startswith("expected"):
            hint += "; a type of your own is registered by importing its package (--user-dir)"
        self.fail(f"unknown type {name!r} ({hint})", at)

    def column(self, colon_at: int, raw: str) -> str:
        at, column = _stripped(colon_at + 1, raw)
        if not column:
            self.fail("empty column name after ':'", colon_at)
        for index, char in enumerate(column):
            if char in _COLUMN_FORBIDDEN:
                self.fail(f"a column name cannot contain {char!r}", at + index)
        return column

    def attribute(self, modality: str, piece_at: int, piece: str,
                  seen: Mapping[str, int]) -> tuple[str, int, object]:
        equals = piece.find("=")
        name_at, name = _stripped(piece_at, piece if equals < 0 else piece[:equals])
        if not name and equals < 0:
            self.fail("empty attribute (remove the extra ',')", name_at)
        if not name:
            self.fail("missing attribute name before '='", piece_at + equals)
        spec = MODALITIES[modality].get(name)
        if spec is None:
            hint = _did_you_mean(name, MODALITIES[modality])
            self.fail(f"unknown attribute {name!r} for {modality} ({hint})", name_at)
        if name in seen:
            self.fail(f"attribute {name!r} is repeated (first at {seen[name]})", name_at)
        if spec.kind == "flag":
            if equals >= 0:
                self.fail(f"flag {name!r} takes no value", piece_at + equals)
            return name, name_at, True
        needs_value = f"attribute {name!r} needs a value, e.g. {name}={spec.placeholder}"
        if equals < 0:
            self.fail(needs_value, name_at)
        value_at, raw = _stripped(piece_at + equals + 1, piece[equals + 1:])
        if not raw:
            self.fail(needs_value, value_at)
        for index, char in enumerate(raw):
            if char in _VALUE_FORBIDDEN:
                self.fail(f"an attribute value cannot contain {char!r}", value_at + index)
        try:
            return name, name_at, spec.convert(name, raw)
        except ValueError as problem:
            reason = str(problem)
        self.fail(reason, value_at)


def _flush(chars: list[str], parts: list[str | Slot]) -> None:
    if chars:
        parts.append("".join(chars))
        chars.clear()


def _strip_ends(parts: list[str | Slot]) -> tuple[str | Slot, ...]:
    """Whitespace next to '->', '|||' and the ends of the text belongs to no part."""
    if parts and isinstance(parts[0], str):
        parts[0] = parts[0].lstrip()
    if parts and isinstance(parts[-1], str):
        parts[-1] = parts[-1].rstrip()
    return tuple(part for part in parts if part != "")
