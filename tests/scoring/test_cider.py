import pytest
from fairseq.scoring import build_scorer
from pycocoevalcap.cider.cider import Cider

from ofasys_fairseq.scoring import references as generated_references
from ofasys_fairseq.scoring.cider import CiderD, CiderDConfig, CiderDScorer, tokenize_caption

CORPORA = {
    "coco_like": (
        [
            "A man riding a horse on a beach.",
            "Two dogs play with a ball.",
            "A plate of food.",
        ],
        [
            ["A man rides a horse along the beach.", "A person on a horse at the sea shore."],
            [
                "Two dogs are playing with a red ball.",
                "Dogs chasing a ball in the grass.",
                "Two puppies play.",
            ],
            ["A plate with food on it.", "Some food on a white plate."],
        ],
    ),
    "repeated_words_and_no_overlap": (
        ["a a a a dog dog", "zebra giraffe elephant", "the cat sat on the mat the cat sat"],
        [
            ["a dog runs", "a small dog"],
            ["a bus on the street", "a red bus"],
            ["the cat sat on the mat", "a cat is sitting on a mat"],
        ],
    ),
    "different_lengths": (
        [
            "cat",
            "a very long caption that goes on and on about a cat sitting on a very soft red mat",
            "a cat on a mat",
            "",
        ],
        [
            ["a cat sitting on a mat in the living room"],
            ["a cat on a mat", "cat on mat"],
            ["a cat on a mat", "the cat is on the mat", "a kitten lying on a rug"],
            ["an empty room", "a room"],
        ],
    ),
}


def pycocoevalcap_cider(candidates, references):
    res = {i: [tokenize_caption(candidate)] for i, candidate in enumerate(candidates)}
    gts = {i: [tokenize_caption(ref) for ref in refs] for i, refs in enumerate(references)}
    return Cider().compute_score(gts, res)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_matches_pycocoevalcap(name):
    candidates, references = CORPORA[name]
    expected_mean, expected_per_example = pycocoevalcap_cider(candidates, references)
    cider = CiderD(references)
    for candidate, refs, expected in zip(candidates, references, expected_per_example):
        assert cider.score(candidate, refs) == pytest.approx(expected, abs=1e-6)
    assert cider.corpus_score(candidates, references) == pytest.approx(expected_mean, abs=1e-6)


def test_references_as_candidates_match_pycocoevalcap():
    _, references = CORPORA["coco_like"]
    candidates = [refs[0] for refs in references]
    expected_mean, _ = pycocoevalcap_cider(candidates, references)
    assert expected_mean > 1.0
    score = CiderD(references).corpus_score(candidates, references)
    assert score == pytest.approx(expected_mean, abs=1e-6)


def test_tokenize_caption():
    assert tokenize_caption('A Dog\'s "toy" (red), isn\'t it... - yes!') == (
        "a dog 's toy red is n't it yes"
    )
    assert tokenize_caption("A t-shirt costs 3.50 at 5 o'clock; 1,000 of them?") == (
        "a t-shirt costs 3.50 at 5 o'clock 1,000 of them"
    )


def test_tokenize_caption_is_idempotent():
    for candidates, references in CORPORA.values():
        for text in candidates + [ref for refs in references for ref in refs]:
            assert tokenize_caption(tokenize_caption(text)) == tokenize_caption(text)


def test_correct_caption_scores_higher_than_partly_wrong():
    _, references = CORPORA["coco_like"]
    cider = CiderD(references)
    refs = references[0]
    assert cider.score(refs[0], refs) > cider.score("A man rides a cow along the road.", refs) > 0


def test_candidate_sharing_nothing_scores_zero():
    _, references = CORPORA["coco_like"]
    assert CiderD(references).score("zebra giraffe elephant", references[0]) == 0.0


def test_empty_inputs_are_rejected():
    with pytest.raises(ValueError):
        CiderD([])
    with pytest.raises(ValueError):
        CiderD([["a cat"]]).score("a cat", [])


def test_fairseq_scorer_reports_corpus_score_times_100():
    candidates, references = CORPORA["coco_like"]
    targets = [refs[0] for refs in references]
    single_references = [[target] for target in targets]
    expected = 100.0 * CiderD(single_references).corpus_score(candidates, single_references)

    scorer = build_scorer("cider", tgt_dict=None)
    assert isinstance(scorer, CiderDScorer)
    for target, candidate in zip(targets, candidates):
        scorer.add_string(target, candidate)
    assert scorer.score() == pytest.approx(expected)
    assert scorer.result_string() == f"CIDEr-D = {expected:.2f}"


def test_fairseq_scorer_reads_every_reference_of_the_decoded_rows():
    candidates, references = CORPORA["coco_like"]
    expected = 100.0 * CiderD(references).corpus_score(candidates, references)
    scorer = build_scorer("cider", tgt_dict=None)
    generated_references.publish(references)  # what the task does for each decoded batch
    for refs, candidate in zip(references, candidates):
        scorer.add_string(refs[0], candidate)
    assert scorer.score() == pytest.approx(expected)
    assert scorer.score() == pytest.approx(100 * pycocoevalcap_cider(candidates, references)[0])


def test_fairseq_scorer_without_examples():
    assert CiderDScorer(CiderDConfig()).result_string() == "CIDEr-D = 0.00"
