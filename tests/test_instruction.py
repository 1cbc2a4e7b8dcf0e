"""Tests for the instruction language parser (ofasys_fairseq/instruction.py)."""

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ofasys_fairseq.instruction import MODALITIES, Instruction, InstructionError, Slot

CAPTION = "[IMAGE:img] what does the image describe? -> [TEXT:cap]"
ENTAILMENT = ("can text1 [TEXT:sent1] imply text2 [TEXT:sent2]? -> can text1 [TEXT:sent1,no_loss] "
              "imply text2 [TEXT:sent2,no_loss]? [TEXT:label,closed_set]")
INFILLING = 'what is the complete text of " [TEXT:sentence,mask_ratio=0.3] "? -> [TEXT:sentence]'
CLASSIFY = "[IMAGE:image,preprocess=imagenet] what does the image describe? -> [TEXT:label_name,closed_set]"
TTS = "[PHONE:text] -> [AUDIO:fbank]"
STRUCT = 'structured knowledge: " [STRUCT:database,uncased] " . how? -> [TEXT:tgt]'
EXAMPLES = [CAPTION, ENTAILMENT, INFILLING, CLASSIFY, TTS, STRUCT]


def enc(modality, column=None, **attrs):
    return Slot(modality, column, attrs, "encoder")


def dec(modality, column=None, **attrs):
    return Slot(modality, column, attrs, "decoder")


# --- the examples ------------------------------------------------------------


def test_caption():
    instruction = Instruction.parse(CAPTION)
    (template,) = instruction.alternatives
    assert template.encoder == (enc("IMAGE", "img"), " what does the image describe?")
    assert template.decoder == (dec("TEXT", "cap"),)
    assert instruction.encoder_slots == [enc("IMAGE", "img")]
    assert instruction.decoder_slots == [dec("TEXT", "cap")]
    assert [slot.position for slot in instruction.slots] == [0, CAPTION.index("[TEXT")]


def test_entailment_flags():
    instruction = Instruction.parse(ENTAILMENT)
    assert instruction.slots == [
        enc("TEXT", "sent1"), enc("TEXT", "sent2"),
        dec("TEXT", "sent1", no_loss=True), dec("TEXT", "sent2", no_loss=True),
        dec("TEXT", "label", closed_set=True),
    ]
    label = instruction.slots[-1]
    assert label.has("closed_set") and not label.has("no_loss")
    assert label.attr_positions == {"closed_set": ENTAILMENT.index("closed_set")}
    assert instruction.alternatives[0].decoder[-2] == "? "


def test_typed_values():
    (masked, target) = Instruction.parse(INFILLING).slots
    assert masked == enc("TEXT", "sentence", mask_ratio=0.3)
    assert isinstance(masked.get("mask_ratio"), float)
    assert target == dec("TEXT", "sentence")
    assert Instruction.parse(INFILLING).alternatives[0].encoder[0] == 'what is the complete text of " '

    image, label = Instruction.parse(CLASSIFY).slots
    assert image == enc("IMAGE", "image", preprocess="imagenet")
    assert image.get("preprocess") == "imagenet" and image.get("missing", 7) == 7
    assert label == dec("TEXT", "label_name", closed_set=True)

    slot = Instruction.parse("[TEXT , max_length = +5 , noise_ratio=1 ]->").slots[0]
    assert slot == enc("TEXT", None, max_length=5, noise_ratio=1.0)
    assert type(slot.get("max_length")) is int and type(slot.get("noise_ratio")) is float
    motion = Instruction.parse("-> [MOTION:m,min_length=2,sample_rate=0.5]").slots[0]
    assert motion == dec("MOTION", "m", min_length=2, sample_rate=0.5)


def test_other_examples():
    assert Instruction.parse(TTS).slots == [enc("PHONE", "text"), dec("AUDIO", "fbank")]
    instruction = Instruction.parse(STRUCT)
    assert instruction.slots == [enc("STRUCT", "database", uncased=True), dec("TEXT", "tgt")]
    assert instruction.alternatives[0].encoder[-1] == ' " . how?'


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_are_already_canonical(text):
    instruction = Instruction.parse(text)
    assert str(instruction) == text
    assert Instruction.parse(str(instruction)) == instruction
    assert "Instruction.parse(" in repr(instruction)


def test_alternatives_and_empty_sides():
    text = "[TEXT:a] -> [TEXT:b]|||->  |||  -> x [IMAGE]"
    instruction = Instruction.parse(text)
    first, second, third = instruction.alternatives
    assert second.encoder == second.decoder == () and third.encoder == ()
    assert third.decoder == ("x ", dec("IMAGE"))
    assert [t.position for t in instruction.alternatives] == [0, 23, 30]
    assert str(instruction) == "[TEXT:a] -> [TEXT:b] ||| -> ||| -> x [IMAGE]"
    assert len(instruction.slots) == 3 and len(instruction.decoder_slots) == 2


def test_whitespace_next_to_arrow_and_separator_belongs_to_nobody():
    left = Instruction.parse("  hello   [TEXT:a]  ->   [TEXT:b]  bye  ")
    assert left.alternatives[0].encoder == ("hello   ", enc("TEXT", "a"))
    assert left.alternatives[0].decoder == (dec("TEXT", "b"), "  bye")
    assert left == Instruction.parse("hello   [TEXT:a] -> [TEXT:b]  bye")


def test_slots_are_hashable_and_equality_ignores_positions():
    a = Instruction.parse("[TEXT:a,no_loss] -> x")
    b = Instruction.parse("   [TEXT: a , no_loss ]->x")
    assert a == b and hash(a) == hash(b)
    assert a.slots[0].position != b.slots[0].position
    assert len({a.slots[0], b.slots[0], enc("TEXT", "a")}) == 2
    assert str(a.slots[0]) == "[TEXT:a,no_loss]"


def test_every_type_accepts_preprocess_and_adaptor():
    for modality, specs in MODALITIES.items():
        assert {"preprocess", "adaptor"} <= set(specs)
        slot = Instruction.parse(f"[{modality}:c,preprocess=p,adaptor=q] ->").slots[0]
        assert slot.attrs == {"preprocess": "p", "adaptor": "q"}
        assert all(spec.kind in {"flag", "int", "float", "str"} and spec.description for spec in specs.values())


# --- escapes -----------------------------------------------------------------


def test_escapes():
    text = r"a \[b\] \\ c \-> d \|\|\| e | f -> \[x\]"
    (template,) = Instruction.parse(text).alternatives
    assert template.encoder == ("a [b] \\ c -> d ||| e | f",)
    assert template.decoder == ("[x]",)
    assert str(template) == text.replace("e | f", "e \\| f")  # the canonical form escapes every '|'
    assert Instruction.parse(str(template)) == Instruction.parse(text)


def test_escaped_arrow_next_to_real_arrow():
    (template,) = Instruction.parse(r"a-->\->>").alternatives
    assert template.encoder == ("a-",) and template.decoder == ("->>",)
    assert Instruction.parse(str(template)).alternatives == (template,)


# --- errors ------------------------------------------------------------------


def check_error(text, position, *fragments):
    with pytest.raises(InstructionError) as info:
        Instruction.parse(text)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.instruction == text
    assert error.position == position, str(error)
    for fragment in fragments:
        assert fragment in error.message
    message, shown, caret = str(error).split("\n")
    assert message == error.message
    assert shown == "  " + text
    assert caret.index("^") - 2 == position and caret.strip() == "^"
    return error


def test_example_error_message():
    text = "[TEXT:a] -> [TEXT:b,no_los]"
    message = "unknown attribute 'no_los' for TEXT (did you mean 'no_loss'?)"
    error = check_error(text, text.index("no_los"), message)
    assert str(error) == (message + "\n"
                          "  [TEXT:a] -> [TEXT:b,no_los]\n"
                          "                      ^")


def test_instruction_error_is_a_picklable_value_error():
    assert issubclass(InstructionError, ValueError)
    with pytest.raises(ValueError):
        Instruction.parse("[TXT:a] -> x")
    error = InstructionError("bad", "abc", 3)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.instruction, copy.position) == ("bad", "abc", 3)
    assert str(error).endswith("\n  abc\n     ^")  # position == len(text): one past the end


@pytest.mark.parametrize("text, type_name", [("[TXT:a] -> x", "TXT"), ("x -> [text:a]", "text"),
                                             ("[ Text ] ->", "Text")])
def test_unknown_type_suggests(text, type_name):
    check_error(text, text.index(type_name), f"unknown type {type_name!r}", "did you mean 'TEXT'?")


def test_unknown_type_without_suggestion_lists_types():
    check_error("[QWERTY:a] ->", 1, "unknown type 'QWERTY'", "expected one of TEXT, IMAGE")


@pytest.mark.parametrize("text, name, guess", [
    ("[IMAGE:i,mask_ration=0.1] ->", "mask_ration", "mask_ratio"),
    ("[AUDIO:a, max_lenght=3] ->", "max_lenght", "max_length"),
    ("-> [VIDEO:v,numframes=3]", "numframes", "num_frames"),
])
def test_unknown_attribute_suggests(text, name, guess):
    check_error(text, text.index(name), f"unknown attribute {name!r}", f"did you mean {guess!r}?")


def test_attribute_of_another_type_is_unknown():
    text = "[IMAGE:i,no_loss] ->"
    check_error(text, text.index("no_loss"), "unknown attribute 'no_loss' for IMAGE")


@pytest.mark.parametrize("text, value, fragment", [
    ("[TEXT:a,max_length=abc] ->", "abc", "expects an integer"),
    ("[TEXT:a,max_length=1.5] ->", "1.5", "expects an integer"),
    ("[TEXT:a,max_length=0] ->", "0", "must be >= 1"),
    ("[TEXT:a,mask_ratio=1.5] ->", "1.5", "must be in [0, 1]"),
    ("[TEXT:a,mask_ratio= -0.1] ->", "-0.1", "must be in [0, 1]"),
    ("[TEXT:a,noise_ratio=half] ->", "half", "expects a finite number"),
    ("[TEXT:a,noise_ratio=nan] ->", "nan", "expects a finite number"),
    ("[MOTION:m,sample_rate=0] ->", "0", "must be > 0"),
    pytest.param("[VIDEO:v,num_frames=" + "9" * 5000 + "] ->", "9" * 5000, "too long", id="huge-int"),
    ("[TEXT:a,preprocess=x\\y] ->", "\\", "cannot contain '\\\\'"),
])
def test_bad_values_point_at_the_value(text, value, fragment):
    check_error(text, text.index(value), fragment)


def test_flag_with_a_value():
    text = "[TEXT:a,no_loss=true] ->"
    check_error(text, text.index("="), "flag 'no_loss' takes no value")


@pytest.mark.parametrize("text", ["[TEXT:a,max_length] ->", "[TEXT:a,max_length=] ->"])
def test_attribute_without_a_value(text):
    position = text.index("max_length") if text.endswith("h] ->") else text.index("]")
    check_error(text, position, "attribute 'max_length' needs a value, e.g. max_length=<int>")


def test_repeated_attribute():
    text = "[TEXT:a,no_loss,closed_set,no_loss] ->"
    check_error(text, text.rindex("no_loss"), "'no_loss' is repeated")


def test_missing_arrow_points_at_the_end_of_the_alternative():
    check_error("[TEXT:a] [TEXT:b]", 17, "missing '->'")
    text = "[TEXT:a] -> b ||| [TEXT:c] ||| ->"
    check_error(text, text.rindex("|||"), "missing '->'")


def test_second_arrow():
    text = "a -> b -> c"
    check_error(text, text.rindex("->"), "second '->'", "\\->")


@pytest.mark.parametrize("text, position", [("a -> b |||", 7), ("||| a -> b", 0),
                                            ("a -> b |||   ||| c -> d", 13), ("a->b||||||c->d", 7)])
def test_empty_alternative(text, position):
    check_error(text, position, "empty alternative")


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_instruction(text):
    check_error(text, 0, "empty instruction")


def test_unbalanced_brackets():
    check_error("a -> [TEXT:b", 5, "'[' is never closed")
    check_error("a ] -> b", 2, "unmatched ']'")
    text = "[TEXT:a -> [TEXT:b]"
    check_error(text, text.rindex("["), "'[' inside a slot")


@pytest.mark.parametrize("text", ["[] -> a", "[  ] -> a"])
def test_empty_slot(text):
    check_error(text, 0, "empty slot")


def test_bad_slot_heads_and_attribute_lists():
    check_error("[TEXT:] -> a", 5, "empty column")
    check_error("[TEXT: ] -> a", 5, "empty column")
    check_error("[:col] -> a", 1, "missing type")
    check_error("[TEXT:a:b] -> x", 7, "column name cannot contain ':'")
    check_error("[TEXT:a=b] -> x", 7, "column name cannot contain '='")
    check_error("[TEXT:a,,no_loss] -> x", 8, "empty attribute")
    check_error("[TEXT:a,no_loss,] -> x", 16, "empty attribute")
    check_error("[TEXT:a,=3] -> x", 8, "missing attribute name")
    check_error("[TEXT:a,preprocess=a=b] -> x", 20, "value cannot contain '='")


@pytest.mark.parametrize("text, position, fragment", [
    ("a \\x -> b", 2, "bad escape"), ("a -> b\\", 6, "lone '\\'"), ("a \\- > -> b", 2, "bad escape")])
def test_bad_escapes(text, position, fragment):
    check_error(text, position, fragment)


def test_caret_counts_characters_in_multiline_text():
    text = "a\n\tb [TXT] -> c"
    with pytest.raises(InstructionError) as info:
        Instruction.parse(text)
    assert info.value.position == text.index("TXT")
    shown, caret = str(info.value).split("\n")[1:]
    assert shown[2 + info.value.position:].startswith("TXT") and caret.index("^") == shown.index("TXT")


# --- properties --------------------------------------------------------------

NAME_CHARS = "abcXYZ019_-./>|' "
names = st.text(NAME_CHARS, min_size=1, max_size=8).map(str.strip).filter(bool)


@st.composite
def attribute_values(draw, spec):
    if spec.kind == "flag":
        return True
    if spec.kind == "int":
        return draw(st.integers(min_value=int(spec.min or 0),
                                max_value=int(spec.max) if spec.max is not None else 10**6))
    if spec.kind == "float":
        return draw(st.floats(min_value=spec.min, max_value=spec.max, exclude_min=spec.min_exclusive,
                              allow_nan=False, allow_infinity=False, width=64))
    return draw(names)


@st.composite
def slots(draw, side):
    modality = draw(st.sampled_from(sorted(MODALITIES)))
    specs = MODALITIES[modality]
    chosen = draw(st.lists(st.sampled_from(sorted(specs)), unique=True, max_size=3))
    attrs = {name: draw(attribute_values(specs[name])) for name in chosen}
    return Slot(modality, draw(st.none() | names), attrs, side)


def render_slot(slot, pad):
    head = slot.modality if slot.column is None else f"{slot.modality}{pad}:{pad}{slot.column}"
    attrs = [name if value is True else f"{name}{pad}={pad}{value}" for name, value in slot.attrs.items()]
    return "[" + pad + f"{pad},{pad}".join([head, *attrs]) + pad + "]"


def escape(literal):
    out = literal.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace("|", "\\|")
    return out.replace("->", "\\->")


literals = st.text(st.sampled_from("ab ->|[]\\:,=\t\u3000é"), min_size=1, max_size=6)


@st.composite
def sides(draw, side):
    """A side's text and the parts the parser should produce from it."""
    merged = []  # adjacent literals are one literal ("-" then ">" is an arrow to escape)
    for part in draw(st.lists(literals | slots(side), max_size=4)):
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    pad = draw(st.sampled_from(["", " "]))
    text = "".join(escape(part) if isinstance(part, str) else render_slot(part, pad) for part in merged)
    # whitespace at the ends of a side belongs to nobody
    if merged and isinstance(merged[0], str):
        merged[0] = merged[0].lstrip()
    if merged and isinstance(merged[-1], str):
        merged[-1] = merged[-1].rstrip()
    return text, tuple(part for part in merged if part != "")


@st.composite
def instructions(draw):
    alternatives = draw(st.lists(st.tuples(sides("encoder"), sides("decoder")), min_size=1, max_size=3))
    arrow = draw(st.sampled_from(["->", " -> ", "  ->"]))
    separator = draw(st.sampled_from(["|||", " ||| "]))
    text = separator.join(encoder + arrow + decoder for (encoder, _), (decoder, _) in alternatives)
    return text, [(encoder, decoder) for (_, encoder), (_, decoder) in alternatives]


@settings(max_examples=200, deadline=None)
@given(instructions())
def test_generated_instructions_parse_and_round_trip(case):
    text, expected = case
    instruction = Instruction.parse(text)
    assert [(t.encoder, t.decoder) for t in instruction.alternatives] == expected
    canonical = str(instruction)
    assert Instruction.parse(canonical) == instruction
    assert str(Instruction.parse(canonical)) == canonical


def check_parse_or_instruction_error(text):
    try:
        instruction = Instruction.parse(text)
    except InstructionError as error:
        assert 0 <= error.position <= len(text)
        assert error.instruction == text
        assert str(error).split("\n")[-1] == "  " + " " * error.position + "^"
    else:  # whatever parses must survive the canonical round trip
        assert Instruction.parse(str(instruction)) == instruction


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_fuzz_any_text(text):
    check_parse_or_instruction_error(text)


FRAGMENTS = ["[", "]", ":", ",", "=", "->", "-", ">", "|||", "|", "\\", " ", "\n", "a", "col",
             *MODALITIES, "text", "TXT", *{name for specs in MODALITIES.values() for name in specs},
             "0", "1", "-1", "0.5", "1e400", "nan", "+", "_"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=2), max_size=25).map("".join))
def test_fuzz_grammar_fragments(text):
    check_parse_or_instruction_error(text)
