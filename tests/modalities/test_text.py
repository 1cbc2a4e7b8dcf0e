"""TEXT slots: normalization, BART span masking, random-token noise, and reading a
slot's value from a row."""
import math

import numpy as np
import pytest

from ofasys_fairseq.data.example_builder import ExampleBuilder
from ofasys_fairseq.data.table import DataError
from ofasys_fairseq.data.vocabulary import Vocabulary, train_sentencepiece
from ofasys_fairseq.modalities.text import mask_spans, normalize_text, replace_random_tokens
from ofasys_fairseq.plan import TaskPlan

MASK = 999


def encoder_slot(attributes: str = ""):
    """The encoder slot of a parsed instruction, e.g. ``encoder_slot(",uncased")``."""
    plan = TaskPlan.parse(f"[TEXT:src{attributes}] -> [TEXT:tgt]")
    return plan.templates[0].encoder[0]


# --- normalize_text ------------------------------------------------------------------


def test_whitespace_is_collapsed_without_a_slot():
    assert normalize_text("  Hello,\t\tWorld!\n new  line ") == "Hello, World! new line"
    assert normalize_text("") == ""
    assert normalize_text(" \n\t ") == ""


def test_plain_slot_keeps_case_and_punctuation():
    assert normalize_text(" Hello,  World! ", encoder_slot()) == "Hello, World!"


def test_uncased():
    slot = encoder_slot(",uncased")
    assert normalize_text("The QUICK Fox", slot) == "the quick fox"
    assert normalize_text("ÉCOLE Straße", slot) == "école straße"


def test_no_punctuation_replaces_punctuation_by_space():
    slot = encoder_slot(",no_punctuation")
    # punctuation (Unicode category P*) becomes a space, then spaces collapse: words that
    # punctuation separated stay separate; case is kept
    assert normalize_text("Hello,world! (really)", slot) == "Hello world really"
    assert normalize_text("don't stop—now…", slot) == "don t stop now"
    assert normalize_text("«quoted» ¿sí?", slot) == "quoted sí"
    # symbols (category S*) and digits are not punctuation
    assert normalize_text("1+1=2 costs $5 ^_^", slot) == "1+1=2 costs $5 ^ ^"


def test_uncased_and_no_punctuation_together():
    slot = encoder_slot(",uncased,no_punctuation")
    assert normalize_text("  The Cat, the HAT.  ", slot) == "the cat the hat"


def test_max_length_is_not_a_character_limit():
    # max_length counts tokens and is applied by the dataset after encoding (see
    # test_instruction_dataset.py::test_max_length_truncates_tokens); normalization keeps
    # the whole text
    text = "one two three four five six seven"
    assert normalize_text(text, encoder_slot(",max_length=2")) == text


# --- mask_spans ------------------------------------------------------------------------


def masked_positions(tokens, output):
    """Positions of ``tokens`` (all distinct) that do not survive in ``output``."""
    kept = set(output) - {MASK}
    return [i for i, t in enumerate(tokens) if t not in kept]


def expected_infilling(tokens, positions):
    """Tokens with each maximal run of ``positions`` replaced by a single MASK."""
    positions, out = set(positions), []
    for i, t in enumerate(tokens):
        if i not in positions:
            out.append(t)
        elif i - 1 not in positions:
            out.append(MASK)
    return out


@pytest.mark.parametrize("n,ratio", [(10, 0.3), (57, 0.15), (200, 0.3), (200, 0.5), (31, 0.9)])
def test_mask_spans_masks_the_requested_share(n, ratio):
    tokens = list(range(100, 100 + n))
    for seed in range(5):
        out = mask_spans(tokens, ratio, MASK, np.random.default_rng(seed))
        positions = masked_positions(tokens, out)
        # exactly round(n * ratio) tokens disappear (spans may overlap but the loop tops
        # up until the budget is spent) ...
        assert len(positions) == round(n * ratio)
        # ... the others keep their order, and each masked run becomes one <mask>
        assert out == expected_infilling(tokens, positions)


def test_mask_spans_masks_spans_not_single_tokens():
    tokens = list(range(100, 400))
    runs = masked = 0
    for seed in range(10):
        out = mask_spans(tokens, 0.3, MASK, np.random.default_rng(seed))
        runs += out.count(MASK)
        masked += len(masked_positions(tokens, out))
    # span lengths are Poisson(3) (at least 1) and overlapping spans merge: the mean
    # run is well above one token
    assert masked / runs > 2.0


def test_mask_spans_edge_cases():
    rng = np.random.default_rng(0)
    tokens = [5, 6, 7, 8]
    assert mask_spans(tokens, 0.0, MASK, rng) == tokens
    assert mask_spans([5], 0.3, MASK, rng) == [5]  # round(0.3) = 0 tokens to mask
    assert mask_spans([], 0.5, MASK, rng) == []
    assert mask_spans(tokens, 1.0, MASK, rng) == [MASK]
    original = list(tokens)
    mask_spans(tokens, 0.5, MASK, rng)
    assert tokens == original  # the input is not modified


def test_mask_spans_is_a_function_of_the_generator_state():
    tokens = list(range(100, 160))
    same = [mask_spans(tokens, 0.3, MASK, np.random.default_rng([1, 2, 3])) for _ in range(2)]
    assert same[0] == same[1]
    different = {tuple(mask_spans(tokens, 0.3, MASK, np.random.default_rng(s)))
                 for s in range(6)}
    assert len(different) > 1


# --- replace_random_tokens ----------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.5])
def test_replace_random_tokens_rate_and_range(ratio):
    n, original = 4000, 3  # the original token lies outside the candidates: every
    candidates = range(10, 40)  # replacement is visible
    out = replace_random_tokens([original] * n, ratio, candidates, np.random.default_rng(7))
    replaced = [t for t in out if t != original]
    # Binomial(n, ratio): allow 4 standard deviations
    tolerance = 4 * math.sqrt(n * ratio * (1 - ratio))
    assert abs(len(replaced) - n * ratio) <= tolerance
    # replacements are drawn from the candidates only (never specials, <mask> or bins)
    assert set(replaced) <= set(candidates)
    if ratio >= 0.2:  # and spread over all of them
        assert set(replaced) == set(candidates)


def test_replace_random_tokens_edge_cases():
    rng = np.random.default_rng(0)
    tokens = [4, 5, 6]
    assert replace_random_tokens(tokens, 0.0, range(10, 20), rng) == tokens
    assert replace_random_tokens([], 0.5, range(10, 20), rng) == []
    out = replace_random_tokens(tokens, 1.0, range(10, 20), rng)
    assert len(out) == 3 and all(10 <= t < 20 for t in out)
    assert all(type(t) is int for t in out)  # plain ints, ready for torch.tensor
    assert tokens == [4, 5, 6]  # the input is not modified


def test_replace_random_tokens_is_a_function_of_the_generator_state():
    tokens = list(range(50))
    a = replace_random_tokens(tokens, 0.3, range(100, 200), np.random.default_rng(11))
    b = replace_random_tokens(tokens, 0.3, range(100, 200), np.random.default_rng(11))
    c = replace_random_tokens(tokens, 0.3, range(100, 200), np.random.default_rng(12))
    assert a == b and a != c


# --- reading a cell --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary(train_sentencepiece(["hello 42 2.5 the cat"], 40))


def text_value(vocab, row, path, line):
    """The text the row's ``src`` cell gives its TEXT slot, read as the dataset reads it."""
    plan = TaskPlan.parse("[TEXT:src] -> [TEXT:tgt]")
    builder = ExampleBuilder(plan, vocab, {}, None, path, ".", with_target=False)
    return builder.read(row, plan.templates[0], line)[encoder_slot()].text


def test_text_value_reads_text_and_numbers(vocab):
    assert text_value(vocab, {"src": "hello"}, "d.jsonl", 3) == "hello"
    assert text_value(vocab, {"src": 42}, "d.jsonl", 3) == "42"
    assert text_value(vocab, {"src": 2.5}, "d.jsonl", 3) == "2.5"


def test_text_value_missing_column_lists_the_row_columns(vocab):
    with pytest.raises(DataError) as info:
        text_value(vocab, {"source": "x", "tgt": "y"}, "data/train.jsonl", 7)
    error = info.value
    assert (error.path, error.line, error.column) == ("data/train.jsonl", 7, "src")
    assert str(error).startswith("data/train.jsonl, line 7, column 'src': ")
    assert "missing column 'src'" in str(error) and "this row has: source, tgt" in str(error)


@pytest.mark.parametrize("value,kind", [(None, "NoneType"), ({"a": 1}, "dict"), (True, "bool")])
def test_text_value_rejects_non_text(vocab, value, kind):
    with pytest.raises(DataError, match=f"expected text for .*found {kind}") as info:
        text_value(vocab, {"src": value}, "d.jsonl", 2)
    assert (info.value.line, info.value.column) == (2, "src")


def test_a_list_of_references_is_refused_in_an_input_column(vocab):
    with pytest.raises(DataError, match=r"list of references is read only in a target column; "
                                        r"\[TEXT:src\] is not the target") as info:
        text_value(vocab, {"src": ["a", "b"]}, "d.jsonl", 2)
    assert (info.value.line, info.value.column) == (2, "src")
