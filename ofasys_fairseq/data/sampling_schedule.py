"""How the tasks' shares change over a run: task precedence.

At update ``u`` each task's share is proportional to ``base(u) x gate(u)``:

* ``base`` is the sampler's value (``task_sampler.task_rates``): 1 (uniform), the
  task's size, size^(1/T(u)) (temperature, which may ramp) or its weight (which may ramp);
* ``gate`` is 0 before the task's ``start_update`` and from its ``end_update`` on, and,
  when the run has ``stages``, the task's factor in the stage holding ``u`` (0 for a task
  the stage does not list).

Everything is a pure function of the update, so every rank and a resumed run draw the
same tasks (``draw_task``). ``SamplingSchedule.check`` refuses a schedule under which some
update would have nothing to train.
"""
import math
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from .task_sampler import task_rates

SHAPES = ("linear", "cosine")


class Ramp(NamedTuple):
    """A value going from ``start_value`` to ``end_value`` between updates ``start`` and
    ``end`` (``shape`` linear or cosine); constant before and after."""

    start_value: float
    end_value: float
    start: int
    end: int
    shape: str = "linear"

    def at(self, update: int) -> float:
        if update <= self.start:
            return self.start_value
        if update >= self.end:
            return self.end_value
        done = (update - self.start) / (self.end - self.start)
        if self.shape == "cosine":
            done = (1 - math.cos(math.pi * done)) / 2
        return self.start_value + (self.end_value - self.start_value) * done

    @classmethod
    def constant(cls, value: float) -> "Ramp":
        return cls(value, value, 0, 0)


class Stage(NamedTuple):
    """Until update ``until`` (exclusive; None: the rest of the run), the tasks trained
    and the factor on each one's share."""

    name: str
    until: Optional[int]
    factors: Dict[str, float]


class SamplingSchedule:
    """Args:
        sampling: ``uniform``, ``size``, ``temperature`` or ``weights``.
        names: the task names, in task order.
        sizes: training examples per task.
        weights: per task, its weight over the run (``weights`` sampling).
        temperature: the sampling temperature over the run (``temperature`` sampling).
        size_caps: per task, the most examples counted for ``size`` / ``temperature``.
        spans: per task, ``(start_update, end_update)``; ``end_update`` None: no end.
        stages: the run's stages, in order (empty: none).
    """

    def __init__(self, sampling: str, names: Sequence[str], sizes: Sequence[int],
                 weights: Sequence[Ramp], temperature: Ramp,
                 size_caps: Sequence[Optional[int]], spans: Sequence[tuple],
                 stages: Sequence[Stage] = ()):
        self.sampling, self.names, self.sizes = sampling, list(names), list(sizes)
        self.weights, self.temperature, self.size_caps = list(weights), temperature, size_caps
        self.spans, self.stages = list(spans), list(stages)

    @property
    def is_static(self) -> bool:
        """The shares never change."""
        return (not self.stages and all(r.start_value == r.end_value for r in self.weights)
                and self.temperature.start_value == self.temperature.end_value
                and all(start == 0 and end is None for start, end in self.spans))

    def at(self, update: int) -> np.ndarray:
        """Each task's share at ``update`` (sums to 1)."""
        raw = self._raw(update)
        if raw.sum() <= 0:
            raise ValueError(f"no task is trained at update {update}")
        return raw / raw.sum()

    def _raw(self, update: int) -> np.ndarray:
        base = task_rates(self.sampling, self.sizes, [w.at(update) for w in self.weights],
                          self.temperature.at(update), self.size_caps)
        gate = np.array([float(start <= update and (end is None or update < end))
                         for start, end in self.spans])
        stage = self.stage_at(update)
        if stage is not None:
            gate *= np.array([stage.factors.get(name, 0.0) for name in self.names])
        return base * gate

    def stage_at(self, update: int) -> Optional[Stage]:
        """The stage holding ``update`` (the last one after every ``until``)."""
        for stage in self.stages:
            if stage.until is None or update < stage.until:
                return stage
        return self.stages[-1] if self.stages else None

    def breakpoints(self) -> List[int]:
        """The updates where some share starts or stops changing."""
        points = {0}
        for start, end in self.spans:
            points.update(p for p in (start, end) if p is not None)
        for ramp in self.weights + [self.temperature]:
            points.update((ramp.start, ramp.end))
        points.update(s.until for s in self.stages if s.until is not None)
        return sorted(points)

    def check(self) -> None:
        """Refuse a schedule that leaves some update with nothing to train, naming it."""
        for update in self.breakpoints():
            if self._raw(update).sum() <= 0:
                raise ValueError(f"from update {update} no task would be trained (their "
                                 f"start_update / end_update, weights or stages leave "
                                 f"none)")
