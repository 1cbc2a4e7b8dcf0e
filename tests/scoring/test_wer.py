"""Word error rate: hand-computed alignments, several references, and the same numbers
as fairseq's own ``--scoring wer`` scorer."""
import pytest
from fairseq.scoring.wer import WerScorer, WerScorerConfig

from ofasys_fairseq.scoring.wer import word_errors


@pytest.mark.parametrize("prediction, reference, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", (0, 6)),
    ("the cat sit on mat", "the cat sat on the mat", (2, 6)),  # a substitution, a deletion
    ("the black cat sat", "the cat sat", (1, 3)),  # an insertion
    ("", "seven two nine", (3, 3)),  # everything deleted
    ("seven", "", (1, 0)),  # nothing to say: every word inserted
    ("Seven two", "seven two", (1, 2)),  # case counts, as in fairseq's scorer
    ("  seven   two ", "seven two", (0, 2)),  # whitespace does not
])
def test_hand_computed(prediction, reference, expected):
    assert word_errors(prediction, [reference]) == expected


def test_the_closest_reference_counts():
    assert word_errors("a b c", ["a x y z", "a b d"]) == (1, 3)


def test_agrees_with_fairseqs_scorer():
    pairs = [("one two three", "one too three"), ("four five", "four five six"),
             ("seven eight nine ten", "seven nine ten"), ("zero", "zero")]
    scorer = WerScorer(WerScorerConfig())
    errors = words = 0
    for reference, prediction in pairs:
        scorer.add_string(reference, prediction)
        e, w = word_errors(prediction, [reference])
        errors, words = errors + e, words + w
    assert scorer.score() == pytest.approx(100 * errors / words)
    assert 100 * errors / words == pytest.approx(100 * 3 / 10)  # by hand
