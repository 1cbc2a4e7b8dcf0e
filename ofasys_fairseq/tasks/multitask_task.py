"""``--task multitask``: one model trained on several instructions at once.

Each task (``task_specs.py``) is an ``InstructionTask`` member sharing the run's one
vocabulary, modality settings and model. The scheduler (``data/task_schedule.py``)
decides which task every micro-batch of every rank trains; ``batch_mode`` decides
how batches combine tasks. Logs carry each task's loss, tokens and samples, and
validation reports each task's metrics as ``<task>_<metric>`` plus ``score``, the
mean of every task's first metric, to choose the best checkpoint by.
"""
import argparse
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from fairseq import metrics
from fairseq.data import iterators
from fairseq.dataclass import ChoiceEnum
from fairseq.optim.fp16_optimizer import FP16Optimizer
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..data.multitask_dataset import BATCH_MODES, MultitaskDataset
from ..data.table import DataError, find_split_files
from ..data.sampling_schedule import Ramp, SamplingSchedule, Stage
from ..data.task_sampler import SAMPLING
from ..data.task_schedule import BatchBudget, TaskSchedule
from ..plan import TaskPlan
from ..scoring.validation_metrics import (METRIC_STATS, log_metrics, metric_value,
                                         selection_value, stat_key)
from ..instruction import Slot
from ..modalities import get_modality
from ..modalities.base import CONTINUOUS
from .gradient_balance import GradientBalance, shared_gradient_norm
from .instruction_task import (STATE_FORMAT, InstructionCommonConfig, InstructionConfig,
                               InstructionTask, upgrade_task_state)
from .task_specs import (TaskConfigError, TaskSpec, check_schedule, parse_tasks,
                         parse_temperature, subset_names)

logger = logging.getLogger(__name__)


@dataclass
class MultitaskConfig(InstructionCommonConfig):
    tasks: Any = field(default=None, metadata={
        "help": "the tasks: a YAML file with a 'tasks:' mapping of name -> {instruction, data, "
                "weight, loss_weight, metrics, batch_size, ...} (in Hydra configs, the mapping "
                "itself under task.tasks)"})
    task_sampling: ChoiceEnum(SAMPLING) = field(default="weights", metadata={
        "help": "how often each task is trained: uniform, proportional to its size, "
                "temperature (size^(1/T)) or proportional to its weight (all 1: uniform)"})
    sampling_temperature: float = field(default=2.0, metadata={
        "help": "T of --task-sampling temperature"})
    temperature_ramp: Any = field(default=None, metadata={
        "help": "anneal --sampling-temperature over updates: 'to=5,end=3000[,start=0]"
                "[,shape=cosine][,from=2]' (from: --sampling-temperature)"})
    stages: Any = field(default=None, metadata={
        "help": "named stages in order, name -> {until: update, tasks: [names] or "
                "{name: factor}} (in Hydra configs task.stages; in a --tasks file, 'stages:')"})
    batch_mode: ChoiceEnum(BATCH_MODES) = field(default="homogeneous", metadata={
        "help": "homogeneous: each batch from one sampled task; mixed: each batch holds tasks "
                "in proportion; round: a batch of every task per update, gradients summed"})
    log_task_gnorm: bool = field(default=False, metadata={
        "help": "log <task>_gnorm: the norm of each task's batch gradient on the parameters "
                "the tasks share, per target token as fairseq's gnorm (homogeneous batches; "
                "a measurement of what each task asks of the shared model)"})
    balance_gradients: bool = field(default=False, metadata={
        "help": "scale each task's loss so that its gradient on the shared parameters has "
                "the size of the tasks' mean (running norms per task, kept in checkpoints; "
                "homogeneous batches): tasks with small gradients are not out-stepped by "
                "those with large ones under Adam's shared second moment"})
    update_freq: Any = II("optimization.update_freq")
    train_subset: str = II("dataset.train_subset")
    distributed_world_size: Any = II("distributed_training.distributed_world_size")
    ddp_backend: Any = II("distributed_training.ddp_backend")
    find_unused_parameters: Any = II("distributed_training.find_unused_parameters")


def _setting(cfg, name: str, default):
    """A run-level setting, or ``default`` outside fairseq-train (nothing to interpolate)."""
    try:
        value = getattr(cfg, name)
    except Exception:
        return default
    return default if isinstance(value, str) and value.startswith("${") else value


def _per_token(criterion):
    """``criterion`` with its summed loss divided by its sample size (target tokens)."""
    def forward(model, sample):
        loss, size, log = criterion(model, sample)
        return loss / max(size, 1), size, log
    return forward


@register_task("multitask", dataclass=MultitaskConfig)
class MultitaskTask(InstructionTask):
    cfg: MultitaskConfig

    def __init__(self, cfg: MultitaskConfig, specs: List[TaskSpec]):
        super().__init__(cfg, plan=None)
        self.use_specs(specs)
        self.stages: List[Stage] = []
        self.temperature = Ramp.constant(cfg.sampling_temperature)
        self.schedule: Optional[SamplingSchedule] = None  # the training set's, once loaded
        # task name -> its validation search, for tasks with their own eval_max_len
        self.validation_generators: Dict[str, Any] = {}
        self.balance = GradientBalance(self.task_names) if cfg.balance_gradients else None

    def use_specs(self, specs: List[TaskSpec]) -> None:
        """Train or decode these tasks (checked; each gets its member task)."""
        self.specs = specs
        if self.cfg.balance_gradients and str(self.cfg.batch_mode) != "homogeneous":
            raise TaskConfigError(f"balance_gradients measures each task's gradient on its "
                                  f"own batches: it needs batch_mode homogeneous, not "
                                  f"{self.cfg.batch_mode}")
        self.members = [InstructionTask(_member_config(self.cfg, spec),
                                        TaskPlan.parse(spec.instruction)) for spec in specs]
        for member, spec in zip(self.members, specs):
            member.modality_settings = self.modality_settings  # one geometry, one model
            _check_metrics(spec, member.supported_metrics(), member.default_metrics())
            target = member.plan.target
            if (str(self.cfg.batch_mode) == "mixed"
                    and get_modality(target.modality).output_kind == CONTINUOUS):
                raise TaskConfigError(f"task '{spec.name}': batch_mode mixed puts rows of "
                                      f"several tasks in one batch, which a continuous target "
                                      f"({target}) cannot share; use homogeneous or round")

    @classmethod
    def setup_task(cls, cfg: MultitaskConfig, from_checkpoint: bool = False,
                   **kwargs) -> "MultitaskTask":
        # Checks the configuration, touches no data (a checkpoint loads without it).
        if from_checkpoint and isinstance(cfg.tasks, str) and not os.path.isfile(cfg.tasks):
            # the task file stayed where the model was trained: the checkpoint's task
            # state names the tasks (``load_state_dict``)
            return cls(cfg, [])
        specs, stages = parse_tasks(cfg.tasks, cfg.stages, str(cfg.task_sampling),
                                    str(cfg.batch_mode))
        task = cls(cfg, specs)
        task.stages = stages
        task.temperature = parse_temperature(cfg.temperature_ramp, cfg.sampling_temperature,
                                             str(cfg.task_sampling), str(cfg.batch_mode))
        check_schedule(specs, stages, str(cfg.task_sampling), task.temperature)
        return task

    @property
    def task_names(self) -> List[str]:
        return [spec.name for spec in self.specs]

    def member(self, name: str) -> InstructionTask:
        """The task ``name`` (its instruction and labels; the shared vocabulary)."""
        if name not in self.task_names:
            raise ValueError(f"no task {name!r}; this model's tasks are "
                             f"{', '.join(self.task_names)}")
        return self.members[self.task_names.index(name)]

    # -- vocabulary and labels -------------------------------------------------
    def training_texts(self) -> List[str]:
        """Every task's training texts (one vocabulary for all); each task's labels set."""
        self._check_data()
        return [text for member in self.members for text in member.training_texts()]

    def statistics_cells(self):
        """Every task's cells: a modality's statistics cover all the tasks that read it."""
        return [cell for member in self.members for cell in member.statistics_cells()]

    def use_vocabulary(self, vocab) -> None:
        super().use_vocabulary(vocab)
        for member in self.members:
            member.use_vocabulary(vocab)

    def _check_data(self) -> None:
        """Every task's training and validation files exist (all problems at once)."""
        problems = []
        for spec in self.specs:
            for subset in subset_names(spec.train_subset) + subset_names(spec.valid_subset):
                try:
                    find_split_files(spec.data, subset)
                except DataError as error:
                    problems.append(f"task '{spec.name}': {error}")
        if problems:
            raise TaskConfigError("\n".join(problems))

    def planned_slots(self) -> List[Slot]:
        return [slot for member in self.members for slot in member.planned_slots()]

    def state_dict(self) -> Dict[str, object]:
        if self.vocab is None:
            return {}
        state = {"format": STATE_FORMAT, "vocabulary": self.vocab.state_dict(),
                 "modalities": self.modality_settings,
                 "tasks": {spec.name: {"instruction": member.plan.text, "labels": member.labels}
                           for spec, member in zip(self.specs, self.members)}}
        if self.balance is not None:
            state["gradient_norms"] = self.balance.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, object]) -> None:
        if not state:
            return
        state = upgrade_task_state(state)
        if "tasks" not in state:
            raise ValueError("not a multitask checkpoint: decode it with --task instruction")
        if not self.specs:  # set up from a checkpoint without its task file
            self.use_specs([TaskSpec(name=name, instruction=task["instruction"], data="")
                            for name, task in state["tasks"].items()])
        missing = [name for name in self.task_names if name not in state["tasks"]]
        if missing:
            raise ValueError(f"the checkpoint has no task(s) {', '.join(missing)} (it has "
                             f"{', '.join(state['tasks'])})")
        self.use_checkpoint_vocabulary(state["vocabulary"])
        self.use_checkpoint_settings(state["modalities"])  # shared with the members
        for name, member in zip(self.task_names, self.members):
            for column, labels in state["tasks"][name]["labels"].items():
                member.add_labels(column, labels)
        if self.balance is not None:
            self.balance.load_state_dict(state.get("gradient_norms", {}))

    # -- data --------------------------------------------------------------------
    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        self.prepare()
        train = split == self.cfg.train_subset
        datasets = []
        for spec, member in zip(self.specs, self.members):
            subset = spec.train_subset if train else (spec.valid_subset if split == "valid"
                                                      else split)
            tables = member.open_subset(spec.data, subset)
            datasets.append(member.dataset_for(tables, member.bind_plan(tables), with_target=True,
                                               train=train))
            logger.info(f"{split}: task {spec.name}: {len(datasets[-1])} examples from "
                        f"{datasets[-1].name}")
        self.datasets[split] = MultitaskDataset(datasets, [s.loss_weight for s in self.specs],
                                                str(self.cfg.batch_mode) if train else
                                                "homogeneous")
        if train:
            self.schedule = self.sampling_schedule(datasets)
            changing = "" if self.schedule.is_static else \
                " at update 0 (a schedule: each train log line shows the shares then)"
            shares = self.schedule.at(0)
            if str(self.cfg.batch_mode) == "round":  # no sampling: the tasks of a round
                trained = [n for n, p in zip(self.task_names, shares) if p > 0]
                logger.info(f"rounds{changing}: a batch of each of {', '.join(trained)}")
            else:
                logger.info(f"task sampling ({self.cfg.task_sampling}){changing}: "
                            + ", ".join(f"{n} {p:.3f}" for n, p in zip(self.task_names, shares)))

    def sampling_schedule(self, datasets) -> SamplingSchedule:
        """The tasks' shares over the run, for these training datasets."""
        return SamplingSchedule(str(self.cfg.task_sampling), self.task_names,
                                [len(d) for d in datasets], [s.weight for s in self.specs],
                                self.temperature, [s.size_cap for s in self.specs],
                                [(s.start_update, s.end_update) for s in self.specs],
                                self.stages)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None,
                           max_positions=None, ignore_invalid_inputs=False,
                           required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
                           num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False):
        """Batches planned by ``TaskSchedule`` per epoch (fairseq shards and resumes them;
        its own shuffling is off: the plan is already shuffled, reproducibly)."""
        if not isinstance(dataset, MultitaskDataset):
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch,
                data_buffer_size, disable_iterator_cache, skip_remainder_batch,
                grouped_shuffling, update_epoch_batch_itr)
        train = dataset.datasets[0].train
        mode = dataset.mode if train else "sequential"
        budgets = [BatchBudget(max_tokens, max_sentences) if mode == "mixed" else
                   BatchBudget(s.max_tokens or max_tokens, s.batch_size or max_sentences)
                   for s in self.specs]
        schedule = TaskSchedule(dataset.datasets, dataset.offsets[:-1],
                                self.sampling_schedule(dataset.datasets).at, budgets, mode, seed,
                                max_positions, ignore_invalid_inputs,
                                required_batch_size_multiple, num_shards,
                                self._update_freq(epoch) if train else 1)
        dataset.set_epoch(epoch)
        return iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater,
            batch_sampler=lambda _, epoch: schedule.batches(epoch), seed=seed,
            num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
            buffer_size=data_buffer_size, skip_remainder_batch=skip_remainder_batch,
            disable_shuffling=True)

    def _update_freq(self, epoch: int) -> int:
        update_freq = list(_setting(self.cfg, "update_freq", [1]))
        return int(update_freq[min(epoch, len(update_freq)) - 1])

    # -- model -----------------------------------------------------------------
    def build_model(self, cfg, from_checkpoint: bool = False):
        self._check_data_parallel()
        model = super().build_model(cfg, from_checkpoint)
        if not self.cfg.no_eval_metrics:
            self.validation_generators = {
                spec.name: self._sequence_generator([model], argparse.Namespace(
                    beam=self.cfg.eval_beam, max_len_a=0, max_len_b=spec.eval_max_len))
                for spec in self.specs if spec.eval_max_len is not None}
        return model

    def _check_data_parallel(self) -> None:
        """Ranks may train different tasks at one step, so some parameters (an image
        adapter, say) get no gradient on some ranks: DDP must allow that."""
        if (len(self.specs) > 1 and int(_setting(self.cfg, "distributed_world_size", 1)) > 1
                and str(_setting(self.cfg, "ddp_backend", "")) in ("c10d", "pytorch_ddp")
                and not _setting(self.cfg, "find_unused_parameters", False)):
            raise ValueError("multitask data-parallel training: ranks train different tasks, "
                             "so use --ddp-backend legacy_ddp (all-reduces every parameter) "
                             "or --find-unused-parameters")

    # -- training and validation -------------------------------------------------
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """A ``round`` sample trains every task's batch in turn; their gradients add up
        before the one optimizer step. Each batch's loss counts per target token, as
        alone, and the step takes the mean over the round's batches (its sample size is
        their count): a task's say in the step does not grow with its target length.

        Parameters the step did not use (another task's adapter) get a zero gradient, as
        data-parallel training gives them (legacy_ddp all-reduces every parameter): the
        optimizer then treats them alike whatever the number of processes (Adam skips a
        missing gradient but still moves a parameter with momentum on a zero one)."""
        if self.schedule is not None and not self.schedule.is_static:
            for name, share in zip(self.task_names, self.schedule.at(update_num)):
                # a float: fairseq saves meters in checkpoints, loaded weights-only
                metrics.log_scalar(f"{name}_share", float(share), round=3)
        parts = sample["rounds"] if "rounds" in sample else [sample]
        scale = 1.0
        if self.balance is not None and "task_index" in sample:
            scale = float(self.balance.scales()[sample["task_index"]])
            sample["loss_weights"] = sample["loss_weights"] * scale
            metrics.log_scalar(f"{self.task_names[sample['task_index']]}_gscale", scale,
                               round=3)
        per_token = "rounds" in sample
        total_loss, total_size, logs = 0.0, 0, {}
        for part in parts:
            loss, size, log = super().train_step(
                part, model, _per_token(criterion) if per_token else criterion, optimizer,
                update_num, ignore_grad)
            total_loss = total_loss + loss.detach()
            total_size += min(size, 1) if per_token else size
            for key, value in log.items():
                logs[key] = logs.get(key, 0) + value
        measure = self.cfg.log_task_gnorm or self.balance is not None
        if measure and "task_index" in sample and not ignore_grad and total_size > 0:
            weight = self.specs[sample["task_index"]].loss_weight * scale
            self._measure_shared_gradient(model, sample["task_index"], update_num,
                                          float(total_size) * weight)
        for parameter in model.parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        return total_loss, total_size, logs

    def _measure_shared_gradient(self, model, task: int, update_num: int,
                                 divisor: float) -> None:
        """The norm of the batch's gradient on the shared parameters (none of a task's
        own adapters and heads) per unit of its sample size, as the trainer normalizes it,
        before clipping and data-parallel averaging, without the task's loss_weight and
        balancing scale (``divisor``: sample size x both): logged as ``<task>_gnorm``,
        recorded for balancing. With --update-freq only a step's first batch is measured
        (the gradient then holds that batch alone)."""
        if update_num == getattr(self, "_gnorm_update", None):
            return
        self._gnorm_update = update_num
        if getattr(self, "_shared", (None,))[0] is not model:
            own = {id(p) for p, _ in self._exclusive_parameters(model)}
            self._shared = (model, [p for p in model.parameters() if id(p) not in own])
        norm = shared_gradient_norm(self._shared[1]) / divisor
        if self.cfg.log_task_gnorm:
            metrics.log_scalar(f"{self.specs[task].name}_gnorm", norm, round=3)
        if self.balance is not None:
            self.balance.record(task, norm)

    def optimizer_step(self, optimizer, model, update_num):
        """The optimizer's step, then each task's own parameters (adapters and output
        heads no other task uses) moved ``lr_scale`` times as far: the step of an optimizer
        whose update is proportional to the learning rate (SGD, Adam, AdamW, Adagrad, NAG;
        not Adafactor's relative steps) at the task's rate. The same on every rank (their
        gradients are already reduced) and stateless, so resumes and data-parallel runs
        follow it exactly."""
        scaled = self._lr_scaled_parameters(model)
        if scaled and isinstance(optimizer, FP16Optimizer):
            raise ValueError("lr_scale needs fp32 training, --amp or --memory-efficient-fp16: "
                             "--fp16 / --bf16 step fp32 copies of the parameters")
        before = [p.detach().clone() for p, _ in scaled]
        if self.balance is not None:
            self.balance.step()
        super().optimizer_step(optimizer, model, update_num)
        with torch.no_grad():
            for (parameter, scale), old in zip(scaled, before):
                parameter.sub_(old).mul_(scale).add_(old)

    def _lr_scaled_parameters(self, model) -> List[tuple]:
        """(parameter, lr_scale) of each task with a scale other than 1, for the modules
        only that task uses (a module another task reads too keeps the run's rate)."""
        if all(spec.lr_scale == 1 for spec in self.specs):
            return []
        return [(parameter, self.specs[task].lr_scale)
                for parameter, task in self._exclusive_parameters(model)
                if self.specs[task].lr_scale != 1]

    def _exclusive_parameters(self, model) -> List[tuple]:
        """(parameter, task) for the parameters of the modules only that task uses."""
        users: Dict[int, List[int]] = {}
        modules = {}
        for t, member in enumerate(self.members):
            for module in model.modules_of(member.plan, self.modality_settings):
                users.setdefault(id(module), []).append(t)
                modules[id(module)] = module
        return [(parameter, tasks[0]) for key, tasks in users.items() if len(set(tasks)) == 1
                for parameter in modules[key].parameters() if parameter.requires_grad]

    def valid_step(self, sample, model, criterion):
        loss, sample_size, log = FairseqTask.valid_step(self, sample, model, criterion)
        # every task's statistics in every output: data-parallel sums need equal keys
        log.update({stat_key(key, f"{spec.name}_"): 0 for spec in self.specs
                    for metric in spec.metrics for key in METRIC_STATS[metric]})
        if not self.cfg.no_eval_metrics and sample.get("references"):
            task = sample["task_index"]
            stats = self.members[task].metric_stats(sample,
                                                    self.validation_predictions(model, sample),
                                                    self.specs[task].metrics)
            prefix = f"{self.specs[task].name}_"
            log.update({stat_key(k, prefix): v for k, v in stats.items()
                        if stat_key(k, prefix) in log})
        return loss, sample_size, log

    def validation_predictions(self, model, sample) -> List[Any]:
        """The outputs validation scores: within the task's own ``eval_max_len``, or the
        run's."""
        spec = self.specs[sample["task_index"]]
        return self.predictions(model, sample,
                                self.validation_generators.get(spec.name, self.sequence_generator),
                                spec.eval_max_len or self.cfg.eval_max_len)

    def reduce_metrics(self, logging_outputs, criterion):
        FairseqTask.reduce_metrics(self, logging_outputs, criterion)
        logged = [log_metrics(logging_outputs, spec.metrics, f"{spec.name}_") for spec in self.specs]
        if any(logged):  # a validation batch (fairseq reduces each one as it comes)
            metrics.log_derived("score", self._selection_score)

    def _selection_score(self, meters) -> float:
        """The mean of every task's first metric (over the tasks validated), each as a
        score where higher is better (``selection_value``: an error rate counts 100 - rate)."""
        values = []
        for spec in self.specs:
            metric, prefix = spec.metrics[0], f"{spec.name}_"
            if stat_key(METRIC_STATS[metric][-1], prefix) in meters:
                value = metric_value(metric, meters, prefix)
                values.append(selection_value(metric, value))
        return round(float(np.mean(values)), 2)


def _member_config(cfg: MultitaskConfig, spec: TaskSpec) -> InstructionConfig:
    common = {f.name: _setting(cfg, f.name, f.default) for f in fields(InstructionCommonConfig)}
    return InstructionConfig(**common, data=spec.data, instruction=spec.instruction,
                             closed_set_labels=spec.closed_set_labels,
                             train_subset=spec.train_subset)


def _check_metrics(spec: TaskSpec, supported: List[str], default: List[str]) -> None:
    unknown = [m for m in spec.metrics if m not in supported]
    if unknown:
        raise TaskConfigError(f"task '{spec.name}': metric(s) {', '.join(unknown)} are not "
                              f"available for its target; it supports {', '.join(supported)}")
    spec.metrics = list(spec.metrics) or default
