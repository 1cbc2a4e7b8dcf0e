"""The tasks of a multitask run: parsed and checked before anything is loaded.

``tasks`` is a mapping name -> fields (in a Hydra config, so that
``task.tasks.caption.weight=2`` overrides one field) or the path of a YAML file
holding such a mapping under ``tasks:`` (the short form for ``fairseq-train
--tasks FILE``; its relative data paths are read from the file's directory).
"""
import difflib
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, List, Mapping, Optional, Tuple, Union

from omegaconf import OmegaConf

from ..data.sampling_schedule import SHAPES, Ramp, SamplingSchedule, Stage

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass
class TaskSpec:
    """One task of a multitask run.

    Args:
        name: names the task in logs (``<name>_loss``) and metrics (``<name>_accuracy``).
        instruction: the instruction; a list is joined into ``|||`` alternatives.
        data: directory holding the task's subsets.
        train_subset / valid_subset: the task's files for the run's train / valid subsets:
            a subset name (``train``: ``train.jsonl``, or its shards ``train-00000.jsonl``
            ...), a glob (``train-0000[0-3]``), or a list of them (their rows together).
        weight: sampling weight (``task_sampling: weights``): a number, or a ramp
            ``{from, to, start, end, shape}`` over updates (a ``Ramp`` once parsed).
        start_update / end_update: the task is trained from update ``start_update`` until
            ``end_update`` (exclusive; None: to the end).
        size_cap: most examples counted for ``size`` / ``temperature`` sampling.
        loss_weight: multiplies the task's token losses (and so its gradients).
        lr_scale: multiplies the learning rate of the parameters only this task uses (its
            own adapters and output head); shared ones move at the run's rate.
        metrics: validation metrics, the first one counting in the selection ``score``
            (default: every metric the target supports).
        batch_size / max_tokens: this task's batch budget (default: the run's).
        eval_max_len: this task's ``--eval-max-len`` (longest sequence its validation
            decodes, forced prefix included; decoder steps of a continuous target).
        closed_set_labels: as ``--closed-set-labels``, relative to ``data``.
    """
    name: str
    instruction: str
    data: str
    train_subset: Union[str, List[str]] = "train"
    valid_subset: Union[str, List[str]] = "valid"
    weight: Any = 1.0
    start_update: int = 0
    end_update: Optional[int] = None
    size_cap: Optional[int] = None
    loss_weight: float = 1.0
    lr_scale: float = 1.0
    metrics: List[str] = field(default_factory=list)
    batch_size: Optional[int] = None
    max_tokens: Optional[int] = None
    eval_max_len: Optional[int] = None
    closed_set_labels: Optional[str] = None


FIELDS = [f.name for f in fields(TaskSpec) if f.name != "name"]
REQUIRED = ("instruction", "data")


class TaskConfigError(ValueError):
    """A multitask configuration that cannot run; the message names task and key."""


def parse_tasks(tasks, stages, sampling: str, batch_mode: str = "homogeneous"
                ) -> Tuple[List[TaskSpec], List[Stage]]:
    """Check ``tasks`` (mapping or YAML path, which may hold ``stages:`` too) and
    ``stages`` against ``sampling`` and ``batch_mode``; return the specs and stages."""
    base_dir = ""
    if isinstance(tasks, str):
        if not os.path.isfile(tasks):
            raise TaskConfigError(f"--tasks {tasks}: no such file")
        base_dir = os.path.dirname(os.path.abspath(tasks))
        loaded = OmegaConf.to_container(OmegaConf.load(tasks))
        if not isinstance(loaded, dict) or not isinstance(loaded.get("tasks"), dict):
            raise TaskConfigError(f"{tasks}: expected a mapping 'tasks:' of task name -> fields")
        tasks, stages = loaded["tasks"], stages or loaded.get("stages")
    if isinstance(stages, str):  # --stages "{warmup: {until: 300, tasks: [a]}, ...}"
        try:
            stages = OmegaConf.create(stages)
        except Exception as error:
            raise TaskConfigError(f"--stages: not a YAML mapping ({error})") from None
    tasks, stages = (OmegaConf.to_container(c, resolve=True) if OmegaConf.is_config(c) else c
                     for c in (tasks, stages))
    if not isinstance(tasks, Mapping) or not tasks:
        raise TaskConfigError("no tasks: give --tasks FILE.yaml or a 'task.tasks' mapping of "
                              "task name -> {instruction, data, ...}")
    specs = [_spec(name, values, base_dir) for name, values in tasks.items()]
    parsed_stages = _stages(stages, [s.name for s in specs])
    _check_sampling(specs, sampling, batch_mode)
    if parsed_stages or any(s.start_update or s.end_update is not None for s in specs):
        _check_scheduled(batch_mode, "start_update / end_update / stages", rounds_follow=True)
    if batch_mode == "round":
        _check_round_stages(parsed_stages)
    return specs, parsed_stages


def _spec(name, values, base_dir: str) -> TaskSpec:
    where = f"task '{name}'"
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TaskConfigError(f"{where}: a task name is a letter then letters, digits or _")
    if not isinstance(values, Mapping):
        raise TaskConfigError(f"{where}: expected a mapping of fields, got {values!r}")
    for key in values:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TaskConfigError(f"{where}: unknown key '{key}'{hint}; "
                                  f"known keys: {', '.join(FIELDS)}")
    for key in REQUIRED:
        if not values.get(key):
            raise TaskConfigError(f"{where}: '{key}' is required")
    spec = TaskSpec(name=name, **values)
    if isinstance(spec.instruction, (list, tuple)):
        spec.instruction = " ||| ".join(spec.instruction)
    if isinstance(spec.metrics, str):
        spec.metrics = [spec.metrics]
    spec.data = os.path.join(base_dir, os.path.expanduser(str(spec.data)))
    for key in ("loss_weight", "lr_scale"):
        if not _is_number(getattr(spec, key)) or getattr(spec, key) < 0:
            raise TaskConfigError(f"{where}: {key} must be a number >= 0, got "
                                  f"{getattr(spec, key)!r}")
    spec.weight = parse_ramp(spec.weight, f"tasks.{name}.weight")
    start, end = spec.start_update, spec.end_update
    if not isinstance(start, int) or start < 0:
        raise TaskConfigError(f"tasks.{name}.start_update: expected an update >= 0, got "
                              f"{start!r}")
    if end is not None and (not isinstance(end, int) or end <= start):
        raise TaskConfigError(f"tasks.{name}.end_update: {end!r} is not an update after "
                              f"start_update ({start}): the task would never be trained")
    for key in ("train_subset", "valid_subset"):
        value = getattr(spec, key)
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or \
                not all(isinstance(n, str) and n for n in names):
            raise TaskConfigError(f"{where}: {key} must be a subset name or a list of them, "
                                  f"got {value!r}")
    for key in ("size_cap", "batch_size", "max_tokens", "eval_max_len"):
        value = getattr(spec, key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise TaskConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    return spec


def subset_names(subsets: Union[str, List[str]]) -> List[str]:
    """A task's ``train_subset`` / ``valid_subset`` as a list of names."""
    return [subsets] if isinstance(subsets, str) else list(subsets)


def _check_sampling(specs: List[TaskSpec], sampling: str, batch_mode: str) -> None:
    """Weights and size caps mean something for some samplers only, and for no sampler
    in round batches: never ignore them."""
    constant_one = Ramp.constant(1.0)
    if batch_mode == "round":
        sampled = [s.name for s in specs if s.weight != constant_one or s.size_cap is not None]
        if sampled:
            raise TaskConfigError(
                f"task(s) {', '.join(sampled)} set 'weight' or 'size_cap', which batch_mode "
                f"'round' does not use (every round holds one batch of every task): remove "
                f"them, or weigh the tasks' gradients with 'loss_weight'")
        return
    if sampling != "weights":
        weighted = [s.name for s in specs if s.weight != constant_one]
        if weighted:
            raise TaskConfigError(f"task(s) {', '.join(weighted)} set 'weight', which only "
                                  f"task_sampling 'weights' uses (it is '{sampling}')")
    else:
        if all(s.weight == Ramp.constant(0.0) for s in specs):
            raise TaskConfigError("every task has weight 0: nothing would be trained")
        if any(s.weight.start_value != s.weight.end_value for s in specs):
            _check_scheduled(batch_mode, "a weight ramp")
    if sampling not in ("size", "temperature"):
        capped = [s.name for s in specs if s.size_cap is not None]
        if capped:
            raise TaskConfigError(f"task(s) {', '.join(capped)} set 'size_cap', which only "
                                  f"task_sampling 'size' and 'temperature' use (it is "
                                  f"'{sampling}')")


RAMP_KEYS = ("from", "to", "start", "end", "shape")


def parse_ramp(value, where: str, default_from: Optional[float] = None) -> Ramp:
    """A number (constant), or a ramp: a mapping ``{from, to, start, end, shape}`` or the
    same as ``from=1,to=5,end=3000`` (a flag's form); ``from`` defaults to
    ``default_from``, ``start`` to 0, ``shape`` to linear. Values are numbers >= 0."""
    if _is_number(value):
        if value < 0:
            raise TaskConfigError(f"{where}: must be a number >= 0, got {value!r}")
        return Ramp.constant(float(value))
    if isinstance(value, str):
        try:
            value = {k.strip(): v.strip() for k, v in (p.split("=", 1)
                                                        for p in value.split(",") if p.strip())}
        except ValueError:
            raise TaskConfigError(f"{where}: expected key=value pairs ({', '.join(RAMP_KEYS)}), "
                                  f"got {value!r}") from None
        value = {k: (v if k == "shape" else _number(v, f"{where}.{k}")) for k, v in value.items()}
    if not isinstance(value, Mapping):
        raise TaskConfigError(f"{where}: expected a number or a ramp {{from, to, start, end, "
                              f"shape}}, got {value!r}")
    unknown = [k for k in value if k not in RAMP_KEYS]
    if unknown:
        raise TaskConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; a ramp "
                              f"has {', '.join(RAMP_KEYS)}")
    ramp = {"from": default_from, "start": 0, "shape": "linear", **value}
    for key in ("from", "to"):
        if not _is_number(ramp.get(key)) or ramp[key] < 0:
            raise TaskConfigError(f"{where}.{key}: expected a number >= 0, got "
                                  f"{ramp.get(key)!r}")
    start, end = ramp["start"], ramp.get("end")
    if not isinstance(start, int) or start < 0:
        raise TaskConfigError(f"{where}.start: expected an update >= 0, got {start!r}")
    if not isinstance(end, int) or end <= start:
        raise TaskConfigError(f"{where}.end: expected an update after start ({start}), got "
                              f"{end!r}")
    if ramp["shape"] not in SHAPES:
        raise TaskConfigError(f"{where}.shape: expected one of {', '.join(SHAPES)}, got "
                              f"{ramp['shape']!r}")
    return Ramp(float(ramp["from"]), float(ramp["to"]), start, end, ramp["shape"])


def parse_temperature(ramp, temperature: float, sampling: str, batch_mode: str) -> Ramp:
    """``temperature``, annealed by ``ramp`` (--temperature-ramp) if given; > 0 throughout."""
    parsed = parse_ramp(ramp if ramp else temperature, "temperature_ramp",
                        default_from=temperature)
    if min(parsed.start_value, parsed.end_value) <= 0:
        raise TaskConfigError(f"temperature_ramp: the sampling temperature must stay > 0, got "
                              f"{parsed.start_value} -> {parsed.end_value}")
    if parsed.start_value != parsed.end_value:
        if sampling != "temperature":
            raise TaskConfigError(f"temperature_ramp: task_sampling is '{sampling}', which has "
                                  f"no temperature")
        _check_scheduled(batch_mode, "temperature_ramp")
    return parsed


def _stages(stages, names: List[str]) -> List[Stage]:
    """``stages``: name -> {until, tasks}, in order; ``tasks`` a list of task names or a
    mapping task -> factor on its share."""
    if not stages:
        return []
    if not isinstance(stages, Mapping):
        raise TaskConfigError(f"stages: expected a mapping of stage name -> {{until, tasks}}, "
                              f"got {stages!r}")
    parsed: List[Stage] = []
    for position, (name, values) in enumerate(stages.items()):
        where = f"stages.{name}"
        if not isinstance(values, Mapping) or set(values) - {"until", "tasks"}:
            raise TaskConfigError(f"{where}: expected {{until, tasks}}, got {values!r}")
        until, previous = values.get("until"), parsed[-1].until if parsed else 0
        if until is None and position < len(stages) - 1:
            raise TaskConfigError(f"{where}.until: only the last stage may run to the end")
        if until is not None and (not isinstance(until, int) or until <= previous):
            raise TaskConfigError(f"{where}.until: {until!r} is not an update after the "
                                  f"previous stage's end ({previous}): stages follow one "
                                  f"another without overlapping")
        tasks = values.get("tasks")
        factors = {t: 1.0 for t in tasks} if isinstance(tasks, list) else tasks
        if not isinstance(factors, Mapping) or not factors:
            raise TaskConfigError(f"{where}.tasks: expected a list of task names or a mapping "
                                  f"task -> factor, got {tasks!r}")
        for task, factor in factors.items():
            if task not in names:
                close = difflib.get_close_matches(str(task), names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise TaskConfigError(f"{where}.tasks: no task '{task}'{hint}; the tasks are "
                                      f"{', '.join(names)}")
            if not _is_number(factor) or factor < 0:
                raise TaskConfigError(f"{where}.tasks.{task}: expected a factor >= 0, got "
                                      f"{factor!r}")
        parsed.append(Stage(str(name), until, {t: float(f) for t, f in factors.items()}))
    never = [n for n in names if not any(s.factors.get(n, 0) > 0 for s in parsed)]
    if never:
        raise TaskConfigError(f"stages: task(s) {', '.join(never)} are in no stage, so never "
                              f"trained: list them in a stage, or remove them")
    return parsed


def check_schedule(specs: List[TaskSpec], stages: List[Stage], sampling: str,
                   temperature: Ramp) -> None:
    """Refuse a schedule that leaves some update with nothing to train."""
    schedule = SamplingSchedule(sampling, [s.name for s in specs], [1] * len(specs),
                                [s.weight for s in specs], temperature,
                                [None] * len(specs),
                                [(s.start_update, s.end_update) for s in specs], stages)
    try:
        schedule.check()
    except ValueError as error:
        raise TaskConfigError(f"tasks: {error}") from None


def _check_scheduled(batch_mode: str, what: str, rounds_follow: bool = False) -> None:
    """Refuse a schedule the batch mode cannot follow; ``rounds_follow``: rounds can (they
    hold the tasks trained at their update)."""
    if batch_mode == "homogeneous" or (rounds_follow and batch_mode == "round"):
        return
    modes = "homogeneous or round" if rounds_follow else "homogeneous"
    raise TaskConfigError(f"{what}: the tasks' shares would change over the run, which "
                          f"batch_mode '{batch_mode}' cannot follow (it plans an epoch at "
                          f"fixed shares): use batch_mode {modes}")


def _check_round_stages(stages: List[Stage]) -> None:
    for stage in stages:
        for task, factor in stage.factors.items():
            if factor != 1:
                raise TaskConfigError(
                    f"stages.{stage.name}.tasks.{task}: a factor weighs a task's share, which "
                    f"batch_mode 'round' does not use (a round holds one batch of each of "
                    f"the stage's tasks): list the tasks, or weigh their gradients with "
                    f"'loss_weight'")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(text: str, where: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise TaskConfigError(f"{where}: expected a number, got {text!r}") from None
