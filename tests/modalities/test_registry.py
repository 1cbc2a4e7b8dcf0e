"""The registry: the built-ins in order, what registering checks, declared types replaced
by implementations, and what the TEXT modality reads, constrains and scores."""
import pytest

from ofasys_fairseq.data.vocabulary import Vocabulary, train_sentencepiece
from ofasys_fairseq.decoding.label_trie import ClosedSet
from ofasys_fairseq.instruction import MODALITIES, Instruction, InstructionError
from ofasys_fairseq.modalities import (Context, Modality, get_modality, register_modality,
                                       registered_modalities, registry)
from ofasys_fairseq.plan import TaskPlan
from tests.helpers import allowed_tokens


@pytest.fixture
def restored_registry():
    """Register freely: the registry and the parser's grammar are put back afterwards."""
    saved, grammar = dict(registry._REGISTRY), dict(MODALITIES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    MODALITIES.clear()
    MODALITIES.update(grammar)


def test_built_ins_then_declared_types():
    names = [m.name for m in registered_modalities()]
    assert names[:6] == ["TEXT", "IMAGE", "BOX", "STRUCT", "AUDIO", "PHONE"]
    assert all(get_modality(n).implemented for n in names[:6])
    assert {n for n in names[6:]} == {"VIDEO", "MOTION", "CATEGORY"}
    assert not any(get_modality(n).implemented for n in names[6:])
    assert list(MODALITIES) == names  # the parser knows exactly the registered types


def test_unknown_name():
    with pytest.raises(KeyError, match="no modality 'NUMBER' is registered"):
        get_modality("NUMBER")


def test_registering_teaches_the_parser(restored_registry):
    class Scalar(Modality):
        name = "SCALAR"
        attributes = {}

    with pytest.raises(InstructionError, match="unknown type 'SCALAR'"):
        Instruction.parse("[SCALAR:x] -> [TEXT:y]")
    register_modality(Scalar())
    (slot, _) = Instruction.parse("[SCALAR:x,preprocess=p] -> [TEXT:y]").slots
    assert slot.modality == "SCALAR" and slot.get("preprocess") == "p"


@pytest.mark.parametrize("name", ["", "scalar", "TWO WORDS", "9LIVES"])
def test_names_are_upper_case_identifiers(restored_registry, name):
    modality = Modality()
    modality.name = name
    with pytest.raises(ValueError, match="upper-case identifier"):
        register_modality(modality)


def test_an_implementation_replaces_a_declaration_once(restored_registry):
    class Video(Modality):
        name = "VIDEO"

    register_modality(Video())
    assert isinstance(get_modality("VIDEO"), Video)
    with pytest.raises(ValueError, match="modality VIDEO is already registered"):
        register_modality(Video())
    with pytest.raises(ValueError, match="modality TEXT is already registered"):
        register_modality(type("Text", (Modality,), {"name": "TEXT"})())


def test_sides_must_be_encoder_or_decoder(restored_registry):
    modality = type("Odd", (Modality,), {"name": "ODD", "sides": ("middle",)})()
    with pytest.raises(ValueError, match="sides must be a non-empty subset"):
        register_modality(modality)


# --- TEXT ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary(train_sentencepiece(["yes no not sure the cat sat"], 40))


def test_text_reads_normalizes_and_cuts_a_cell(vocab):
    text = get_modality("TEXT")
    (slot, _) = TaskPlan.parse("[TEXT:src,uncased,max_length=2] -> [TEXT:tgt]").templates[0].slots
    value = text.read("  The CAT   sat ", slot, Context(vocab))
    assert value.text == "the cat sat" and value.tokens == vocab.encode("the cat sat")[:2]
    assert text.num_tokens(value, slot, Context(vocab)) == 2


def test_text_closed_set_target_checks_constrains_and_scores(vocab):
    text = get_modality("TEXT")
    plan = TaskPlan.parse("[TEXT:src] -> [TEXT:label,closed_set]")
    target = plan.target
    labels = ClosedSet.build(["yes", "no", "not sure"], vocab.encode, vocab.dictionary.eos())
    ctx = Context(vocab, closed_set=labels)
    with pytest.raises(ValueError, match="'maybe' is not one of the 3 closed-set labels"):
        text.read("maybe", target, ctx)
    value = text.read("not sure", target, ctx)
    assert text.reference(value, target, ctx) == "not sure"
    constraint = text.constraint(target, ctx)
    size = len(vocab.dictionary)
    first = allowed_tokens(constraint, [], size)
    assert set(first) == {vocab.encode(label)[0] for label in ("yes", "no", "not sure")}
    assert allowed_tokens(constraint, vocab.encode("yes"), size) == [vocab.dictionary.eos()]
    assert text.postprocess(vocab.encode("no"), target, ctx, None) == "no"
    assert text.metrics(target, plan.templates[0]) == ["accuracy"]
    stats = text.metric_stats(["no", "yes"], ["no", "no"], target, ["accuracy"], None)
    assert stats == {"_correct": 1, "_total": 2}


def test_text_metrics_follow_the_inputs():
    caption = TaskPlan.parse("[IMAGE:img] what is it? -> [TEXT:caption]")
    summary = TaskPlan.parse("[TEXT:doc] -> [TEXT:summary]")
    text = get_modality("TEXT")
    assert text.metrics(caption.target, caption.templates[0]) == ["bleu", "cider"]
    assert text.metrics(summary.target, summary.templates[0]) == ["bleu"]
    assert text.constraint(summary.target, None) is None  # free text: plain search
