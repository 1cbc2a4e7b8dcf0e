"""The VQA score against the values the official evaluation (GT-Vision-Lab/VQA,
vqaEval.py) gives: 0.3 per matching human answer up to 3 (0, 0.3, 0.6, 0.9, 1.0 for
0..4 of ten), after its answer normalization."""
import pytest
from fairseq.scoring import build_scorer

from ofasys_fairseq.scoring import references
from ofasys_fairseq.scoring.vqa_score import normalize_answer, vqa_score


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0),
                                               (10, 1.0)])
def test_credit_grows_with_the_humans_who_gave_the_answer(matches, expected):
    answers = ["red"] * matches + ["blue", "green", "dark red", "maroon", "pink", "crimson",
                                   "orange", "purple", "brown", "grey"][:10 - matches]
    assert vqa_score("red", answers) == pytest.approx(expected)


@pytest.mark.parametrize("text, normalized", [
    ("Two.", "2"), ("the dog", "dog"), ("A man's hat!", "man's hat"), ("dont", "don't"),
    ("yes?", "yes"), ("3.5", "3.5"), ("1,000", "1000"), ("black/white", "black white"),
    ("black / white", "black white"), ("none", "0")])
def test_official_answer_normalization(text, normalized):
    assert normalize_answer(text) == normalized


def test_normalization_applies_when_the_humans_disagree():
    answers = ["2", "2", "two", "2", "3", "2", "2", "2", "2", "2"]
    assert vqa_score("Two.", answers) == pytest.approx(1.0)


def test_unanimous_answers_are_compared_as_written():
    # a quirk of the official code kept for comparable scores: no normalization at all
    # when every human gave the same string
    assert vqa_score("yes", ["Yes"] * 10) == 0.0
    assert vqa_score("Yes", ["Yes"] * 10) == 1.0


def test_fewer_than_ten_answers_and_none():
    assert vqa_score("cat", ["cat", "cat", "dog"]) == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    with pytest.raises(ValueError):
        vqa_score("cat", [])


def test_fairseq_scorer_reads_every_answer_of_a_row():
    scorer = build_scorer("vqa_score", tgt_dict=None)
    references.publish([["red"] * 2 + ["blue"] * 8, ["yes"] * 10])
    scorer.add_string("red", "red")  # the row's target is its first answer
    scorer.add_string("yes", "no")
    assert scorer.score() == pytest.approx(100 * (0.6 + 0.0) / 2)
    assert scorer.result_string() == "VQA score = 30.00"
