"""TaskPlan: an instruction checked against what is implemented, split into the
encoder input, the forced decoder prefix and the one target."""
import pytest

from ofasys_fairseq.instruction import InstructionError, Slot
from ofasys_fairseq.modalities import get_modality
from ofasys_fairseq.plan import TaskPlan

NLI = ("can text1 [TEXT:premise] imply text2 [TEXT:hypothesis]? -> can text1 "
       "[TEXT:premise,no_loss] imply text2 [TEXT:hypothesis,no_loss]? [TEXT:label,closed_set]")


def failure(text: str) -> InstructionError:
    with pytest.raises(InstructionError) as info:
        TaskPlan.parse(text)
    error = info.value
    # the message carries the instruction and a caret under the offending character
    message, shown, caret = str(error).split("\n")
    assert message == error.message
    assert shown == "  " + text
    assert caret == "  " + " " * error.position + "^"
    return error


# --- valid plans --------------------------------------------------------------------


def test_plan_splits_encoder_prefix_and_target():
    plan = TaskPlan.parse(NLI)
    (template,) = plan.templates
    assert [p if isinstance(p, str) else p.column for p in template.encoder] == \
        ["can text1 ", "premise", " imply text2 ", "hypothesis", "?"]
    assert [p if isinstance(p, str) else p.column for p in template.prefix] == \
        ["can text1 ", "premise", " imply text2 ", "hypothesis", "? "]
    assert all(p.has("no_loss") for p in template.prefix if isinstance(p, Slot))
    assert plan.target.column == "label" and plan.target.has("closed_set")
    assert plan.target.side == "decoder"
    assert plan.columns() == ["premise", "hypothesis", "label"]
    assert plan.input_columns() == ["premise", "hypothesis"]
    assert plan.text == NLI


def test_plan_without_prefix():
    plan = TaskPlan.parse("summarize: [TEXT:doc] -> [TEXT:summary]")
    (template,) = plan.templates
    assert template.prefix == ()
    assert template.target.column == "summary"
    assert plan.input_columns() == ["doc"]


def test_alternatives_share_the_target():
    plan = TaskPlan.parse("[TEXT:a] -> [TEXT:b] ||| rewrite [TEXT:a] -> [TEXT:b]")
    assert len(plan.templates) == 2
    assert plan.templates[0].target == plan.templates[1].target == plan.target
    assert plan.columns() == ["a", "b"]


def test_unnamed_slots_bind_to_file_columns_in_order():
    plan = TaskPlan.parse("[TEXT] means [TEXT] -> [TEXT]")
    bound = plan.bind_columns(["x", "y", "z", "extra"])
    assert [s.column for s in bound.templates[0].slots] == ["x", "y", "z"]
    assert bound.target.column == "z"
    assert bound.input_columns() == ["x", "y"]
    assert plan.target.column is None  # binding returns a new plan


def test_named_slots_are_left_alone_by_binding():
    plan = TaskPlan.parse("[TEXT:q] [TEXT] -> [TEXT:a]")
    bound = plan.bind_columns(["c0", "c1", "c2"])
    assert [s.column for s in bound.templates[0].slots] == ["q", "c1", "a"]


def test_binding_needs_enough_columns():
    text = "[TEXT] [TEXT] -> [TEXT]"
    with pytest.raises(InstructionError, match=r"no column 3 to read: the data has 2 columns "
                                               r"\(a, b\)") as info:
        TaskPlan.parse(text).bind_columns(["a", "b"])
    assert info.value.position == text.rindex("[TEXT]")


def test_binding_keeps_one_target_across_alternatives():
    """Unnamed targets are equal before binding; bound, they must still be one column."""
    text = "[TEXT] -> [TEXT] ||| [TEXT] [TEXT] -> [TEXT]"
    plan = TaskPlan.parse(text)
    with pytest.raises(InstructionError, match="same target") as info:
        plan.bind_columns(["a", "b", "c"])
    assert info.value.position == text.rindex("[TEXT]")
    # equal numbers of slots bind every target to the same column
    bound = TaskPlan.parse("[TEXT] -> [TEXT] ||| again [TEXT] -> [TEXT]").bind_columns(["a", "b"])
    assert [t.target.column for t in bound.templates] == ["b", "b"]


# --- refused plans, each pointing at the culprit ------------------------------------------


@pytest.mark.parametrize("text, culprit, modality", [
    ("[VIDEO:clip] what is in the video? -> [TEXT:cap]", "[VIDEO", "VIDEO"),
    ("[TEXT:src] -> [MOTION:pose]", "[MOTION", "MOTION"),
    ("[VIDEO:v] -> [TEXT:t,no_loss] [TEXT:u]", "[VIDEO", "VIDEO"),
    ("[TEXT:a] -> [TEXT:b,no_loss] [CATEGORY:c,closed_set]", "[CATEGORY", "CATEGORY"),
])
def test_unimplemented_modalities_are_not_supported_yet(text, culprit, modality):
    error = failure(text)
    assert not get_modality(modality).implemented
    assert error.message.startswith(f"{modality} slots are not supported yet")
    assert "supported: TEXT" in error.message
    assert error.position == text.index(culprit)


def test_two_target_slots():
    text = "[TEXT:a] -> [TEXT:b] [TEXT:c]"
    error = failure(text)
    assert "only one target slot" in error.message
    assert error.position == text.index("[TEXT:c]")


def test_target_must_end_the_instruction():
    text = "[TEXT:a] -> [TEXT:b] please"
    error = failure(text)
    assert "must end the instruction" in error.message
    assert error.position == text.index("[TEXT:b]")


def test_decoder_needs_a_target():
    for text in ("[TEXT:a] -> [TEXT:b,no_loss]", "[TEXT:a] -> just text"):
        error = failure(text)
        assert "needs a target slot without no_loss" in error.message


@pytest.mark.parametrize("attr", ["no_loss", "closed_set"])
def test_decoder_only_attributes_on_the_encoder(attr):
    text = f"[TEXT:a,{attr}] -> [TEXT:b]"
    error = failure(text)
    assert error.message == f"'{attr}' does not apply to encoder slots"
    assert error.position == text.index(attr)


def test_encoder_only_attribute_on_the_decoder():
    text = "[TEXT:a] -> [TEXT:b,mask_ratio=0.2]"
    error = failure(text)
    assert error.message == "'mask_ratio' does not apply to decoder slots"
    assert error.position == text.index("mask_ratio")


def test_closed_set_on_a_no_loss_slot():
    text = "[TEXT:a] -> [TEXT:b,closed_set,no_loss] [TEXT:c]"
    error = failure(text)
    assert "applies to the target slot" in error.message
    assert error.position == text.index("closed_set")


def test_alternatives_with_different_targets():
    text = "[TEXT:a] -> [TEXT:b] ||| [TEXT:a] -> [TEXT:c]"
    error = failure(text)
    assert "same target slot" in error.message and "[TEXT:b]" in error.message
    assert error.position == text.rindex("[TEXT:c]")


def test_syntax_errors_come_from_the_parser_with_a_caret():
    text = "[TEXT:src,bogus] -> [TEXT:tgt]"
    error = failure(text)
    assert "unknown attribute 'bogus'" in error.message
    assert error.position == text.index("bogus")


# --- rules that involve several slots, from the slots' modalities -----------------------


def test_a_box_needs_an_image():
    text = "[TEXT:name] -> [BOX:region]"
    error = failure(text)
    assert error.message == "[BOX:region] needs an IMAGE slot: box coordinates are pixels of " \
                            "that image"
    assert error.position == text.index("[BOX")


def test_a_box_needs_an_image_recipe_that_moves_boxes():
    text = "[IMAGE:img,preprocess=imagenet] where is [TEXT:name]? -> [BOX:region]"
    error = failure(text)
    assert "preprocess=imagenet cannot move boxes with the image (RandAugment)" in error.message
    assert "use plain or grounding" in error.message
    assert error.position == text.index("preprocess")
    TaskPlan.parse(text.replace("imagenet", "grounding"))  # this one moves them


def test_alternatives_read_the_same_images_in_the_same_order():
    text = "[IMAGE:a] [IMAGE:b] -> [TEXT:t] ||| [IMAGE:b] [IMAGE:a] -> [TEXT:t]"
    error = failure(text)
    assert error.message.startswith("every alternative must read the same feature slots in "
                                    "the same order, expected [IMAGE:a], [IMAGE:b]")
    assert error.position == text.rindex("[IMAGE:b]")
    error = failure("[TEXT:x] -> [TEXT:t] ||| [IMAGE:a] [TEXT:x] -> [TEXT:t]")
    assert "expected none like the first one" in error.message


def test_inputs_only_modalities_stay_before_the_arrow():
    text = "[TEXT:a] -> look: [IMAGE:img,no_loss] [TEXT:t]"
    error = failure("[TEXT:a] -> [IMAGE:img]")
    assert error.message == "IMAGE slots are inputs only: put them before '->'"
    assert "unknown attribute 'no_loss' for IMAGE" in failure(text).message


def test_at_most_eight_feature_slots():
    images = " ".join(f"[IMAGE:i{k}]" for k in range(9))
    text = f"{images} -> [TEXT:t]"
    error = failure(text)
    assert error.message == "at most 8 feature slots (images, ...) per instruction"
    assert error.position == text.index("[IMAGE:i8]")
    TaskPlan.parse(" ".join(f"[IMAGE:i{k}]" for k in range(8)) + " -> [TEXT:t]")


def test_feature_slots_and_their_order():
    plan = TaskPlan.parse("[IMAGE:a] and [TEXT:x] then [IMAGE:b] -> [BOX:r]")
    assert [s.column for s in plan.templates[0].feature_slots] == ["a", "b"]
