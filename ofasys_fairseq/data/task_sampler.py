"""How often each task of a multitask run is trained.

``task_probabilities`` turns task sizes and weights into one distribution;
``draw_task`` picks a task for one micro-batch as a pure function of (seed, update,
slot), so every rank, and a resumed run, draws the same sequence.
"""
from typing import Optional, Sequence

import numpy as np

SAMPLING = ("uniform", "size", "temperature", "weights")


def task_probabilities(sampling: str, sizes: Sequence[int], weights: Sequence[float],
                       temperature: float = 1.0,
                       size_caps: Optional[Sequence[Optional[int]]] = None) -> np.ndarray:
    """Probability of each task: ``task_rates`` normalized."""
    raw = task_rates(sampling, sizes, weights, temperature, size_caps)
    if raw.sum() <= 0:
        raise ValueError(f"{sampling} sampling gives every task weight 0")
    return raw / raw.sum()


def task_rates(sampling: str, sizes: Sequence[int], weights: Sequence[float],
               temperature: float = 1.0,
               size_caps: Optional[Sequence[Optional[int]]] = None) -> np.ndarray:
    """Each task's unnormalized share.

    Args:
        sampling: ``uniform`` (1 each), ``size`` (the size), ``temperature``
            (size^(1/temperature)) or ``weights`` (``weights``).
        sizes: training examples per task.
        weights: explicit weights (``weights`` sampling only).
        temperature: > 0; 1 is ``size``, larger values flatten towards uniform.
        size_caps: per task, the most examples counted for ``size`` / ``temperature``.
    """
    if sampling not in SAMPLING:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLING}")
    counted = np.array([min(n, cap) if cap else n
                        for n, cap in zip(sizes, size_caps or [None] * len(sizes))], dtype=float)
    if sampling == "uniform":
        return np.ones(len(sizes))
    if sampling == "size":
        return counted
    if sampling == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return counted ** (1.0 / temperature)
    return np.asarray(weights, dtype=float)


def draw_task(probabilities: np.ndarray, seed: int, update: int, slot: int) -> int:
    """The task of micro-batch ``slot`` of update ``update`` (slot = rank x update_freq
    + micro-batch; the rank with ``--update-freq 1``)."""
    rng = np.random.default_rng([seed, update, slot])
    return int(rng.choice(len(probabilities), p=probabilities))
