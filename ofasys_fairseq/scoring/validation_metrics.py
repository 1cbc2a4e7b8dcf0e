"""Validation metrics as summable statistics, logged through fairseq's meters.

Each validation batch reports sums (``_correct``, BLEU n-gram counts, ...) in its
logging output; fairseq adds them over batches and data-parallel ranks, and the
metric is derived from the sums, so it is a corpus score, not a mean of batch
scores. A ``prefix`` namespaces one task's statistics in a multitask run
(``_nli_correct`` -> ``nli_accuracy``). A modality adds its own metrics with
``register_metric``.
"""
from functools import partial
from typing import Dict, List, Optional, Sequence

import sacrebleu
from fairseq import metrics

BLEU_ORDER = 4
BLEU_STATS = tuple([f"_bleu_counts_{i}" for i in range(BLEU_ORDER)]
                   + [f"_bleu_totals_{i}" for i in range(BLEU_ORDER)]
                   + ["_bleu_sys_len", "_bleu_ref_len"])
# metric -> the statistics it is derived from; the last one counts what was scored
METRIC_STATS: Dict[str, Sequence[str]] = {
    "accuracy": ("_correct", "_total"),
    "cider": ("_cider_sum", "_cider_count"),
    "bleu": BLEU_STATS,
    "exact_match": ("_exact_match_sum", "_exact_match_count"),
    "rouge_l": ("_rouge_l_sum", "_rouge_l_count"),
    "vqa_score": ("_vqa_score_sum", "_vqa_score_count"),
    "wer": ("_wer_errors", "_wer_words"),
}
# metric where lower is better -> the value where a multitask run's selection score
# reaches 0 (it counts 100 * (1 - value / that), at least 0: 100 - value for a rate)
LOWER_IS_BETTER: Dict[str, float] = {"wer": 100.0}
# metric -> the factor on sum / count (percent by default)
METRIC_SCALES: Dict[str, float] = {}


def register_metric(name: str, total: str, count: str, scale: float = 100.0,
                    lower_is_better: bool = False, zero_score_at: float = 100.0) -> None:
    """A metric reported as ``scale * sum(total) / sum(count)`` over validation batches.

    Args:
        name: the logged name (``--best-checkpoint-metric``, multitask ``metrics:``).
        total: the summed statistic (e.g. ``_box_hits``).
        count: how many were scored (e.g. ``_box_total``).
        scale: 100 for a percentage, 1 for a mean.
        lower_is_better: an error rate or a distance (a multitask selection score counts
            ``selection_value``).
        zero_score_at: for a lower-is-better metric, the value (and beyond) that counts 0
            in a selection score: 100 for a rate in percent.
    """
    if name in METRIC_STATS:
        raise ValueError(f"metric {name!r} is already registered")
    if lower_is_better and not zero_score_at > 0:
        raise ValueError(f"metric {name!r}: zero_score_at must be > 0, got {zero_score_at}")
    METRIC_STATS[name] = (total, count)
    METRIC_SCALES[name] = scale
    if lower_is_better:
        LOWER_IS_BETTER[name] = zero_score_at


def selection_value(name: str, value: float) -> float:
    """``value`` of metric ``name`` as a score where higher is better, 0 to 100 for a
    lower-is-better one (an error rate counts 100 - rate, 0 past 100%: a model that
    babbles)."""
    if name not in LOWER_IS_BETTER:
        return value
    return max(0.0, 100.0 * (1.0 - value / LOWER_IS_BETTER[name]))


def stat_key(key: str, prefix: str = "") -> str:
    """``_correct`` -> ``_nli_correct`` for prefix ``nli_`` (a leading ``_`` hides a
    meter from fairseq's log lines)."""
    return "_" + prefix + key[1:]


def metric_value(name: str, meters, prefix: str = "") -> float:
    """The metric, in percent (CIDEr-D x 100, as usually reported), from summed meters."""
    def total(key: str):
        return meters[stat_key(key, prefix)].sum

    if name == "bleu":
        score = sacrebleu.BLEU.compute_bleu(
            correct=[int(total(f"_bleu_counts_{i}")) for i in range(BLEU_ORDER)],
            total=[int(total(f"_bleu_totals_{i}")) for i in range(BLEU_ORDER)],
            sys_len=int(total("_bleu_sys_len")), ref_len=int(total("_bleu_ref_len")),
            smooth_method="exp")
        return round(score.score, 2)
    numerator, count = METRIC_STATS[name]
    return round(METRIC_SCALES.get(name, 100.0) * total(numerator) / max(total(count), 1), 2)


def log_metrics(logging_outputs: List[Dict[str, object]], names: Optional[Sequence[str]] = None,
                prefix: str = "") -> List[str]:
    """Log ``names`` (default: every metric; those with statistics in ``logging_outputs``)
    as ``prefix + name``; returns the names logged."""
    logged = []
    for name in names or list(METRIC_STATS):
        keys = [stat_key(k, prefix) for k in METRIC_STATS[name]]
        if sum(log.get(keys[-1], 0) for log in logging_outputs) <= 0:
            continue
        for key in keys:
            # plain numbers: numpy scalars would end up pickled in checkpoints, which
            # torch's weights_only loading (rightly) refuses
            metrics.log_scalar_sum(key, float(sum(log.get(key, 0) for log in logging_outputs)))
        metrics.log_derived(prefix + name, partial(metric_value, name, prefix=prefix))
        logged.append(name)
    return logged
