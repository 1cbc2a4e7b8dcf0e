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
from typing import List, Mapping, Optional, Union

from omegaconf import OmegaConf

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
        weight: sampling weight (``task_sampling: weights``).
        size_cap: most examples counted for ``size`` / ``temperature`` sampling.
        loss_weight: multiplies the task's token losses (and so its gradients).
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
    weight: float = 1.0
    size_cap: Optional[int] = None
    loss_weight: float = 1.0
    metrics: List[str] = field(default_factory=list)
    batch_size: Optional[int] = None
    max_tokens: Optional[int] = None
    eval_max_len: Optional[int] = None
    closed_set_labels: Optional[str] = None


FIELDS = [f.name for f in fields(TaskSpec) if f.name != "name"]
REQUIRED = ("instruction", "data")


class TaskConfigError(ValueError):
    """A multitask configuration that cannot run; the message names task and key."""


def parse_task_specs(tasks, sampling: str, batch_mode: str = "homogeneous") -> List[TaskSpec]:
    """Check ``tasks`` (mapping or YAML path) against ``sampling`` and ``batch_mode`` and
    return the specs."""
    base_dir = ""
    if isinstance(tasks, str):
        if not os.path.isfile(tasks):
            raise TaskConfigError(f"--tasks {tasks}: no such file")
        base_dir = os.path.dirname(os.path.abspath(tasks))
        loaded = OmegaConf.to_container(OmegaConf.load(tasks))
        if not isinstance(loaded, dict) or not isinstance(loaded.get("tasks"), dict):
            raise TaskConfigError(f"{tasks}: expected a mapping 'tasks:' of task name -> fields")
        tasks = loaded["tasks"]
    if OmegaConf.is_config(tasks):
        tasks = OmegaConf.to_container(tasks, resolve=True)
    if not isinstance(tasks, Mapping) or not tasks:
        raise TaskConfigError("no tasks: give --tasks FILE.yaml or a 'task.tasks' mapping of "
                              "task name -> {instruction, data, ...}")
    specs = [_spec(name, values, base_dir) for name, values in tasks.items()]
    _check_sampling(specs, sampling, batch_mode)
    return specs


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
    for key in ("weight", "loss_weight"):
        value = getattr(spec, key)
        if not isinstance(value, (int, float)) or value < 0:
            raise TaskConfigError(f"{where}: {key} must be a number >= 0, got {value!r}")
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
    if batch_mode == "round":
        sampled = [s.name for s in specs if s.weight != 1.0 or s.size_cap is not None]
        if sampled:
            raise TaskConfigError(
                f"task(s) {', '.join(sampled)} set 'weight' or 'size_cap', which batch_mode "
                f"'round' does not use (every round holds one batch of every task): remove "
                f"them, or weigh the tasks' gradients with 'loss_weight'")
        return
    if sampling != "weights":
        weighted = [s.name for s in specs if s.weight != 1.0]
        if weighted:
            raise TaskConfigError(f"task(s) {', '.join(weighted)} set 'weight', which only "
                                  f"task_sampling 'weights' uses (it is '{sampling}')")
    elif all(s.weight == 0 for s in specs):
        raise TaskConfigError("every task has weight 0: nothing would be trained")
    if sampling not in ("size", "temperature"):
        capped = [s.name for s in specs if s.size_cap is not None]
        if capped:
            raise TaskConfigError(f"task(s) {', '.join(capped)} set 'size_cap', which only "
                                  f"task_sampling 'size' and 'temperature' use (it is "
                                  f"'{sampling}')")
