"""Validation metrics as summable statistics, logged through fairseq's meters.

Each validation batch reports sums (``_correct``, BLEU n-gram counts, ...) in its
logging output; fairseq adds them over batches and data-parallel ranks, and the
metric is derived from the sums, so it is a corpus score, not a mean of batch
scores. A ``prefix`` namespaces one task's statistics in a multitask run
(``_nli_correct`` -> ``nli_accuracy``).
"""
from functools import partial
from typing import Dict, List, Sequence

import sacrebleu
from fairseq import metrics

BLEU_ORDER = 4
BLEU_STATS = tuple([f"_bleu_counts_{i}" for i in range(BLEU_ORDER)]
                   + [f"_bleu_totals_{i}" for i in range(BLEU_ORDER)]
                   + ["_bleu_sys_len", "_bleu_ref_len"])
# metric -> the statistics it is derived from; the last one counts what was scored
METRIC_STATS: Dict[str, Sequence[str]] = {
    "accuracy": ("_correct", "_total"),
    "box_acc": ("_box_hits", "_box_total"),
    "cider": ("_cider_sum", "_cider_count"),
    "bleu": BLEU_STATS,
}


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
    return round(100.0 * total(numerator) / max(total(count), 1), 2)


def log_metrics(logging_outputs: List[Dict[str, object]], names: Sequence[str] = tuple(METRIC_STATS),
                prefix: str = "") -> List[str]:
    """Log ``names`` (those with statistics in ``logging_outputs``) as ``prefix + name``;
    returns the names logged."""
    logged = []
    for name in names:
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
