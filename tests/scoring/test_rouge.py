"""ROUGE-L as Super-NaturalInstructions reports it: rouge-score's LCS F-measure with
stemming, the best over a row's references."""
import pytest
from fairseq.scoring import build_scorer

from ofasys_fairseq.scoring import references
from ofasys_fairseq.scoring.rouge import rouge_l


def test_longest_common_subsequence_f_measure():
    # LCS "the cat on the mat": 5 of 6 words on either side
    assert rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(5 / 6)


def test_best_reference_counts_and_words_are_stemmed():
    assert rouge_l("cats running", ["a dog", "cat runs"]) == pytest.approx(1.0)
    assert rouge_l("a bird", ["the cat", "a dog"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rouge_l("a", [])


def test_fairseq_scorer_reads_every_reference_of_a_row():
    scorer = build_scorer("rouge_l", tgt_dict=None)
    references.publish([["a dog", "cat runs"], "the cat is on the mat"])
    scorer.add_string("a dog", "cats running")
    scorer.add_string("the cat is on the mat", "the cat sat on the mat")
    assert scorer.score() == pytest.approx(100 * (1.0 + 5 / 6) / 2)


def test_rows_are_matched_by_order_not_by_their_shown_target():
    # a closed-set row trains on its first reference in the label set ("cat runs"), and
    # fairseq-generate prints unknown pieces as <<unk>>: neither is the first reference
    scorer = build_scorer("rouge_l", tgt_dict=None)
    references.publish([["a dog", "cat runs"], [[1.0, 2.0, 3.0, 4.0]]])
    scorer.add_string("cat runs", "a dog")
    scorer.add_string("0.1,0.2,0.3,0.4", "0.1,0.2,0.3,0.4")  # not text: its own target
    scorer.add_string("a <<unk>>", "a cat")  # nothing published: its own target
    assert scorer.references == [["a dog", "cat runs"], ["0.1,0.2,0.3,0.4"], ["a <<unk>>"]]
