"""Validation metrics from summable statistics: statistics of any split of the rows into
batches (and processes) add up to the corpus score, which equals the reference
implementations computed on all rows at once."""
import random

import pytest
import sacrebleu
import torch
from fairseq import metrics
from fairseq.scoring.wer import WerScorer, WerScorerConfig
from rouge_score.rouge_scorer import RougeScorer

from ofasys_fairseq.modalities import Corpus, get_modality
from ofasys_fairseq.modalities.box.accuracy import box_accuracy
from ofasys_fairseq.plan import TaskPlan
from ofasys_fairseq.scoring.cider import CiderD
from ofasys_fairseq.scoring.vqa_score import vqa_score
from ofasys_fairseq.scoring.validation_metrics import (METRIC_SCALES, METRIC_STATS, log_metrics,
                                                       register_metric, stat_key)

ROUGE = RougeScorer(["rougeL"], use_stemmer=True)
WORDS = "a red cat sat on the mat with two small dogs near an old tree".split()
CAPTION = TaskPlan.parse("[IMAGE:image] what is it? -> [TEXT:caption]")
LABEL = TaskPlan.parse("[TEXT:text] -> [TEXT:label,closed_set]")
BOX = TaskPlan.parse("[IMAGE:image] where is the [TEXT:name]? -> [BOX:region]")
TRANSCRIPT = TaskPlan.parse("[AUDIO:wav] what is the text corresponding to the voice ? -> "
                            "[TEXT:text]")


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def batches(items, sizes):
    start = 0
    for size in sizes:
        yield items[start:start + size]
        start += size


def reduced(logging_outputs, names, prefix=""):
    """What fairseq's validation reports: the outputs reduced by ``log_metrics``."""
    with metrics.aggregate(new_root=True) as aggregate:
        log_metrics(logging_outputs, names, prefix)
    return aggregate.get_smoothed_values()


def stats_per_batch(plan, predictions, references, metric_names, sizes):
    modality = get_modality(plan.target.modality)
    corpus = Corpus(references)
    return [modality.metric_stats(p, r, plan.target, metric_names, corpus)
            for p, r in zip(batches(predictions, sizes), batches(references, sizes))]


@pytest.mark.parametrize("sizes", [[40], [7, 13, 20], [1] * 40])
def test_bleu_and_cider_of_batches_are_the_corpus_scores(sizes):
    rng = random.Random(0)
    references = [sentence(rng) for _ in range(40)]
    predictions = [r if rng.random() < 0.3 else sentence(rng) for r in references]
    outputs = stats_per_batch(CAPTION, predictions, references, ["bleu", "cider"], sizes)
    values = reduced(outputs, ["bleu", "cider"])
    assert values["bleu"] == pytest.approx(
        round(sacrebleu.corpus_bleu(predictions, [references]).score, 2), abs=0.01)
    cider = CiderD([[r] for r in references])
    expected = 100 * sum(cider.score(p, [r]) for p, r in zip(predictions, references)) / 40
    assert values["cider"] == pytest.approx(round(expected, 2), abs=0.01)


@pytest.mark.parametrize("sizes", [[24], [5, 19], [1] * 24])
def test_every_metric_reads_every_reference_of_a_row(sizes):
    rng = random.Random(2)
    references = [[sentence(rng) for _ in range(rng.randint(1, 5))] for _ in range(24)]
    predictions = [rng.choice(r) if rng.random() < 0.4 else sentence(rng) for r in references]
    names = ["bleu", "cider", "rouge_l", "exact_match", "vqa_score"]
    values = reduced(stats_per_batch(CAPTION, predictions, references, names, sizes), names)
    assert values["bleu"] == pytest.approx(round(sacrebleu.corpus_bleu(
        predictions, [[r[k] if k < len(r) else None for r in references]
                      for k in range(5)]).score, 2), abs=0.01)
    assert values["cider"] == pytest.approx(
        round(100 * CiderD(references).corpus_score(predictions, references), 2), abs=0.01)
    assert values["rouge_l"] == pytest.approx(round(100 * sum(
        max(ROUGE.score(r, p)["rougeL"].fmeasure for r in refs)
        for p, refs in zip(predictions, references)) / 24, 2), abs=0.01)
    assert values["exact_match"] == pytest.approx(
        round(100 * sum(p in r for p, r in zip(predictions, references)) / 24, 2))
    assert values["vqa_score"] == pytest.approx(round(100 * sum(
        vqa_score(p, r) for p, r in zip(predictions, references)) / 24, 2), abs=0.01)


@pytest.mark.parametrize("sizes", [[20], [3, 17], [1] * 20])
def test_word_error_rate_of_batches_is_the_corpus_rate(sizes):
    text = get_modality("TEXT")
    assert text.metrics(TRANSCRIPT.target, TRANSCRIPT.templates[0]) == ["wer"]
    rng = random.Random(3)
    references = [sentence(rng) for _ in range(20)]
    predictions = [r if rng.random() < 0.5 else sentence(rng) for r in references]
    values = reduced(stats_per_batch(TRANSCRIPT, predictions, references, ["wer"], sizes),
                     ["wer"])
    scorer = WerScorer(WerScorerConfig())  # fairseq's own, on all rows at once
    for prediction, reference in zip(predictions, references):
        scorer.add_string(reference, prediction)
    assert values["wer"] == pytest.approx(round(scorer.score(), 2), abs=0.01)


@pytest.mark.parametrize("sizes", [[30], [11, 19], [29, 1]])
def test_accuracy_and_box_accuracy_of_batches(sizes):
    rng = random.Random(1)
    labels = [rng.choice(["yes", "no", "maybe"]) for _ in range(30)]
    predicted = [label if rng.random() < 0.6 else "no" for label in labels]
    values = reduced(stats_per_batch(LABEL, predicted, labels, ["accuracy"], sizes),
                     ["accuracy"])
    assert values["accuracy"] == pytest.approx(
        round(100 * sum(p == g for p, g in zip(predicted, labels)) / 30, 2))

    gold = [[x, y, x + 10.0, y + 10.0] for x, y in ((rng.uniform(0, 50), rng.uniform(0, 50))
                                                    for _ in range(30))]
    boxes = [[c + rng.uniform(-4, 4) for c in g] if rng.random() < 0.7 else None for g in gold]
    values = reduced(stats_per_batch(BOX, boxes, gold, ["box_acc"], sizes), ["box_acc"])
    hits, total = box_accuracy(torch.tensor([b or [0.0] * 4 for b in boxes]), torch.tensor(gold))
    assert values["box_acc"] == pytest.approx(round(100 * hits / total, 2))


def test_prefixed_statistics_report_one_tasks_metric():
    outputs = [{stat_key("_correct", "nli_"): 3, stat_key("_total", "nli_"): 4},
               {stat_key("_correct", "nli_"): 1, stat_key("_total", "nli_"): 4}]
    assert stat_key("_correct", "nli_") == "_nli_correct"
    assert reduced(outputs, ["accuracy"], "nli_")["nli_accuracy"] == 50.0
    assert "accuracy" not in reduced(outputs, ["accuracy"])  # no unprefixed statistics


def test_a_registered_metric_is_a_scaled_ratio_and_names_are_unique():
    register_metric("test_mean_error", "_test_error", "_test_count", scale=1.0)
    try:
        outputs = [{"_test_error": 1.5, "_test_count": 2}, {"_test_error": 3.0, "_test_count": 4}]
        assert reduced(outputs, ["test_mean_error"])["test_mean_error"] == 0.75
        with pytest.raises(ValueError, match="'test_mean_error' is already registered"):
            register_metric("test_mean_error", "_x", "_y")
    finally:
        del METRIC_STATS["test_mean_error"], METRIC_SCALES["test_mean_error"]
