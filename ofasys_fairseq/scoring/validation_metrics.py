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
# metrics where lower is better (a multitask run's selection score counts 100 - value)
LOWER_IS_BETTER = {"wer"}
# metric -> the factor on sum / count (percent by default)
METRIC_SCALES: Dict[str, float] = {}


def register_metric(name: str, total: str, count: str, scale: float = 100.0,
                    lower_is_better: bool = False) -> None:
    """A metric reported as ``scale * sum(total) / sum(count)`` over validation batches.

    Args:
        name: the logged name (``--best-checkpoint-metric``, multitask ``metrics:``).
        total: the summed statistic (e.g. ``_box_hits``).
        count: how many were scored (e.g. ``_box_total``).
        scale: 100 for a percentage, 1 for a mean.
        lower_is_better: an error rate in percent (a multitask selection score counts
            100 - rate, at least 0).
    """
    if name in METRIC_STATS:
        raise ValueError(f"metric {name!r} is already registered")
    if lower_is_better and scale != 100.0:
        raise ValueError(f"metric {name!r}: a lower-is-better metric must be a percentage "
                         f"(scale 100)")
    METRIC_STATS[name] = (total, count)
    METRIC_SCALES[name] = scale
    if lower_is_better:
        LOWER_IS_BETTER.add(name)


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
