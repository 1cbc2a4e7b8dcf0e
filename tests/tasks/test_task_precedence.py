"""Task precedence in a multitask run: stages, start and end updates, weight ramps and an
annealed temperature, refused before training when they cannot run (naming the config
path), and followed by fairseq-train deterministically: a run resumed mid-stage and
mid-ramp trains the very tasks and losses of an uninterrupted one."""
import glob
import json

import pytest
import torch
from fairseq import metrics, optim, options
from fairseq import tasks as fairseq_tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from ofasys_fairseq.tasks.task_specs import TaskConfigError
from tests.helpers import train_updates
from tests.tasks.test_multitask_training import (MODEL_ARGS, data,  # noqa: F401
                                                 good_tasks, multitask, run, train_command)

RAMP = {"from": 0.2, "to": 1, "start": 0, "end": 12, "shape": "cosine"}


@pytest.mark.parametrize("tasks, options, message", [
    pytest.param({"nli": {"start_update": 10, "end_update": 5}}, {},
                 r"tasks.nli.end_update: 5 is not an update after start_update \(10\): the "
                 r"task would never be trained", id="end-before-start"),
    pytest.param({"nli": {"start_update": -1}}, {},
                 r"tasks.nli.start_update: expected an update >= 0", id="negative-start"),
    pytest.param({"nli": {"weight": {**RAMP, "to": -1}}}, {},
                 r"tasks.nli.weight.to: expected a number >= 0, got -1", id="negative-ramp"),
    pytest.param({"nli": {"weight": {**RAMP, "end": 0}}}, {},
                 r"tasks.nli.weight.end: expected an update after start \(0\)",
                 id="empty-ramp"),
    pytest.param({"nli": {"weight": {**RAMP, "shape": "step"}}}, {},
                 r"tasks.nli.weight.shape: expected one of linear, cosine", id="ramp-shape"),
    pytest.param({"nli": {"weight": {**RAMP, "speed": 2}}}, {},
                 r"tasks.nli.weight: unknown key\(s\) speed", id="ramp-key"),
    pytest.param({"nli": {"end_update": 10}, "grounding": {"start_update": 20}}, {},
                 r"tasks: from update 10 no task would be trained", id="a-gap"),
    pytest.param({}, {"stages": {"first": {"until": 100, "tasks": ["nli"]},
                                 "second": {"until": 50, "tasks": ["grounding"]}}},
                 r"stages.second.until: 50 is not an update after the previous stage's end "
                 r"\(100\): stages follow one another without overlapping", id="overlap"),
    pytest.param({}, {"stages": {"first": {"tasks": ["nli"]},
                                 "second": {"until": 50, "tasks": ["grounding"]}}},
                 r"stages.first.until: only the last stage may run to the end",
                 id="open-stage-first"),
    pytest.param({}, {"stages": {"first": {"until": 10, "tasks": ["nlii"]},
                                 "second": {"tasks": ["nli", "grounding"]}}},
                 r"stages.first.tasks: no task 'nlii' \(did you mean 'nli'\?\)",
                 id="unknown-task"),
    pytest.param({}, {"stages": {"first": {"until": 10, "tasks": {"nli": -2}}}},
                 r"stages.first.tasks.nli: expected a factor >= 0", id="negative-factor"),
    pytest.param({}, {"stages": {"only": {"tasks": ["nli"]}}},
                 r"stages: task\(s\) grounding are in no stage, so never trained",
                 id="never-active"),
    pytest.param({"nli": {"weight": RAMP}}, {"batch_mode": "mixed"},
                 r"a weight ramp: the tasks' shares would change over the run, which "
                 r"batch_mode 'mixed' cannot follow", id="ramp-in-mixed-mode"),
    pytest.param({}, {"batch_mode": "mixed", "stages": {"only": {"tasks": ["nli", "grounding"]}}},
                 r"start_update / end_update / stages: .* batch_mode 'mixed' cannot follow .*"
                 r"use batch_mode homogeneous or round", id="stages-in-mixed-mode"),
    pytest.param({}, {"batch_mode": "round",
                      "stages": {"first": {"until": 10, "tasks": {"nli": 2}},
                                 "both": {"tasks": ["nli", "grounding"]}}},
                 r"stages.first.tasks.nli: a factor weighs a task's share, which batch_mode "
                 r"'round' does not use", id="stage-factor-in-round-mode"),
    pytest.param({}, {"temperature_ramp": "to=5,end=100"},
                 r"temperature_ramp: task_sampling is 'weights', which has no temperature",
                 id="temperature-without-temperature-sampling"),
    pytest.param({}, {"task_sampling": "temperature", "temperature_ramp": "to=0,end=100"},
                 r"temperature_ramp: the sampling temperature must stay > 0",
                 id="zero-temperature"),
    pytest.param({}, {"task_sampling": "temperature", "temperature_ramp": "to=5,end=x"},
                 r"temperature_ramp.end: expected a number, got 'x'", id="ramp-flag-syntax"),
])
def test_bad_schedules_are_refused_naming_the_config_path(data, tmp_path, tasks, options,
                                                          message):
    specs = good_tasks(data)
    for name, values in tasks.items():
        specs[name].update(values)
    with pytest.raises(TaskConfigError, match=message):
        multitask(specs, tmp_path, **options)


def test_a_temperature_ramp_flag_and_stages_set_up(data, tmp_path):
    task = multitask(good_tasks(data), tmp_path, task_sampling="temperature",
                     sampling_temperature=1.0, temperature_ramp="to=4,end=100,shape=cosine",
                     stages="{warmup: {until: 10, tasks: [grounding]}, "
                            "joint: {tasks: {nli: 1, grounding: 0.5}}}")  # as --stages
    assert (task.temperature.start_value, task.temperature.end_value) == (1.0, 4.0)
    assert [s.name for s in task.stages] == ["warmup", "joint"]
    task.load_dataset("train")
    assert task.schedule.at(0).tolist() == [0, 1]
    nli, grounding = task.schedule.at(100).tolist()
    assert nli == pytest.approx(2 * grounding)  # equal sizes, factors 1 and 0.5


def test_a_run_resumed_mid_stage_and_mid_ramp_trains_the_same_tasks(data, tmp_path):
    """Stage 'warmup' trains grounding alone until update 4, then both tasks with nli's
    weight ramping up until update 12; a run resumed at update 6 (mid-ramp) repeats
    updates 7..12 of the uninterrupted run field for field, shares included."""
    tasks = {"tasks": {"nli": {"instruction": good_tasks(data)["nli"]["instruction"],
                               "data": "nli", "weight": RAMP},
                       "grounding": {"instruction": good_tasks(data)["grounding"]["instruction"],
                                     "data": "shapes"}},
             "stages": {"warmup": {"until": 4, "tasks": ["grounding"]},
                        "joint": {"tasks": ["nli", "grounding"]}}}
    tasks_file = data / "precedence.yaml"
    tasks_file.write_text(json.dumps(tasks))
    args = ["--batch-size", "16", "--max-update", 12, "--save-interval-updates", 6,
            "--disable-validation"]
    whole = run(train_command(tasks_file, tmp_path / "whole", *args))
    assert "task sampling (weights) at update 0 (a schedule: each train log line shows the " \
           "shares then): nli 0.000, grounding 1.000" in whole
    updates = train_updates(whole)
    assert sorted(updates) == list(range(1, 13))
    for update in range(1, 5):  # the warm-up stage: grounding alone
        fields = updates[update][2]
        assert fields["nli_share"] == "0" and fields["nli_samples"] == "0", update
    shares = [float(updates[u][2]["nli_share"]) for u in range(5, 13)]
    assert shares == sorted(shares) and 0 < shares[0] < shares[-1] < 0.5
    assert any(updates[u][2]["nli_samples"] != "0" for u in range(5, 13))
    checkpoint, = glob.glob(str(tmp_path / "whole" / "checkpoint_*_6.pt"))
    resumed = run(train_command(tasks_file, tmp_path / "resumed", *args, "--restore-file",
                                checkpoint))
    again = train_updates(resumed)
    assert sorted(again) == list(range(7, 13))
    for update in range(7, 13):
        assert again[update] == updates[update], update


def grounding_step(data, tmp_path, specs, *flags: str, optimizer: str = "adam"):
    """nli + grounding (whose IMAGE adapter no other task reads) set up as fairseq-train
    does, and a batch of grounding. Returns (task, model, criterion, optimizer, batch)."""
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "--task", "multitask", "--tasks", str(tasks_file(tmp_path, specs)), *MODEL_ARGS,
        "--optimizer", optimizer, "--lr", "0.01", "--save-dir", str(tmp_path / "unused"),
        *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = fairseq_tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    grounding = task.datasets["train"].datasets[1]
    offset = int(task.datasets["train"].offsets[1])
    sample = task.datasets["train"].collater([task.datasets["train"][offset + i]
                                              for i in range(8)])
    assert sample["task_index"] == 1 and len(grounding) > 8
    return (task, model, task.build_criterion(cfg.criterion),
            optim.build_optimizer(cfg.optimizer, list(model.parameters())), sample)


def one_step(data, tmp_path, lr_scale: float, optimizer: str = "adam"):
    """One training step of a grounding batch with ``lr_scale`` on grounding. Returns
    (model after, parameters before)."""
    specs = good_tasks(data)
    specs["grounding"]["lr_scale"] = lr_scale
    task, model, criterion, optimizer, sample = grounding_step(data, tmp_path, specs,
                                                               optimizer=optimizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    task.train_step(sample, model, criterion, optimizer, 0)
    task.optimizer_step(optimizer, model, 0)
    return model, before


def tasks_file(tmp_path, specs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tasks.yaml"
    path.write_text(json.dumps({"tasks": specs}))
    return path


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_tasks_own_parameters_move_at_its_learning_rate_scale(data, tmp_path, optimizer):
    moved = {}
    for scale in (1.0, 3.0, 0.0):
        model, before = one_step(data, tmp_path / str(scale), scale, optimizer)
        moved[scale] = {name: p.detach() - before[name] for name, p in model.named_parameters()}
    own = [n for n in moved[1.0] if n.startswith("encoder.adapters.") and ".text" not in n
           and "tokens" not in n and moved[1.0][n].abs().sum() > 0]
    shared = [n for n in moved[1.0] if n.startswith("encoder.layers.")]
    assert own and shared
    for name in own:  # the image adapter: only grounding reads it
        assert torch.allclose(moved[3.0][name], 3 * moved[1.0][name], atol=1e-7), name
        assert moved[0.0][name].abs().max() == 0, name
    for name in shared:  # shared layers: the run's rate whatever the scale
        assert torch.equal(moved[3.0][name], moved[1.0][name]), name


def test_each_tasks_gradient_norm_on_the_shared_parameters_is_logged(data, tmp_path):
    task, model, criterion, optimizer, sample = grounding_step(
        data, tmp_path, good_tasks(data), "--log-task-gnorm")
    with metrics.aggregate() as logged:
        _, sample_size, _ = task.train_step(sample, model, criterion, optimizer, 0)
        task.train_step(sample, model, criterion, optimizer, 0)  # --update-freq: not again
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    own = [n for n in grads if n.startswith("encoder.adapters.") and ".text" not in n
           and "tokens" not in n]  # the image adapter: grounding's alone
    assert own and grads[own[0]].abs().sum() > 0
    shared = torch.stack([(g / 2).pow(2).sum() for n, g in grads.items() if n not in own])
    values = logged.get_smoothed_values()
    # per unit of sample size, as the trainer scales the step's gradient
    assert values["grounding_gnorm"] == pytest.approx(float(shared.sum().sqrt()) / sample_size,
                                                      rel=1e-3)
    assert "nli_gnorm" not in values


def batch_of(task, index: int, rows: int = 8):
    train = task.datasets["train"]
    offset = int(train.offsets[index])
    return train.collater([train[offset + i] for i in range(rows)])


def test_balanced_gradients_scale_each_task_to_the_mean_norm(data, tmp_path):
    """A task's loss is scaled by (mean of the tasks' running norms) / (its own), on top
    of its loss_weight: its gradient on the shared parameters then has the mean's size
    (times its loss_weight)."""
    specs = good_tasks(data)
    specs["nli"]["loss_weight"] = 3
    task, model, criterion, optimizer, grounding = grounding_step(
        data, tmp_path, specs, "--balance-gradients", "--log-task-gnorm")
    nli = batch_of(task, 0)
    logged = []
    for update, sample in enumerate([grounding, nli, nli]):
        optimizer.zero_grad()
        with metrics.aggregate() as step:
            _, sample_size, _ = task.train_step(sample, model, criterion, optimizer, update)
        logged.append(step.get_smoothed_values())
        task.optimizer_step(optimizer, model, update)
    grounding_norm, nli_norm = logged[0]["grounding_gnorm"], logged[1]["nli_gnorm"]
    assert logged[0]["grounding_gscale"] == logged[1]["nli_gscale"] == 1  # not measured yet
    expected_scale = (grounding_norm + nli_norm) / 2 / nli_norm
    assert logged[2]["nli_gscale"] == pytest.approx(expected_scale, rel=1e-4)
    assert abs(expected_scale - 1) > 0.005  # the tasks' gradients differ in size
    own = {id(p) for p, _ in task._exclusive_parameters(model)}
    shared = torch.stack([p.grad.pow(2).sum() for p in model.parameters()
                          if id(p) not in own and p.grad is not None]).sum().sqrt()
    # the gradient in the model is scaled; the logged norm is the task's own
    assert float(shared) / sample_size == pytest.approx(
        3 * expected_scale * logged[2]["nli_gnorm"], rel=1e-4)
    assert task.state_dict()["gradient_norms"] == pytest.approx(
        {"grounding": grounding_norm, "nli": 0.9 * nli_norm + 0.1 * logged[2]["nli_gnorm"]},
        rel=1e-4)


def test_balanced_gradients_need_homogeneous_batches(data, tmp_path):
    with pytest.raises(TaskConfigError, match="balance_gradients measures each task's "
                                              "gradient on its own batches: it needs "
                                              "batch_mode homogeneous, not mixed"):
        multitask(good_tasks(data), tmp_path, batch_mode="mixed", balance_gradients=True)


def test_a_balanced_run_resumed_midway_trains_the_same_losses(data, tmp_path):
    """The running norms travel in the checkpoint: a resumed run scales as the
    uninterrupted one did."""
    args = ["--batch-size", "16", "--max-update", 10, "--save-interval-updates", 5,
            "--disable-validation", "--balance-gradients", "--log-interval", 1]
    whole = train_updates(run(train_command(data / "tasks.yaml", tmp_path / "whole", *args)))
    checkpoint, = glob.glob(str(tmp_path / "whole" / "checkpoint_*_5.pt"))
    assert set(torch.load(checkpoint, weights_only=True)["task_state"]["gradient_norms"]) == \
        {"nli", "grounding"}
    resumed = train_updates(run(train_command(data / "tasks.yaml", tmp_path / "resumed", *args,
                                              "--restore-file", checkpoint)))
    assert sorted(resumed) == list(range(6, 11))
    scaled = [u for u in resumed for k, v in resumed[u][2].items()
              if k.endswith("_gscale") and v not in ("1", "None")]
    assert scaled
    for update in range(6, 11):
        assert resumed[update] == whole[update], update


def test_a_round_steps_by_the_mean_of_each_tasks_per_token_gradient(data, tmp_path):
    """In a round every task's batch counts as it would alone (its loss per target token),
    whatever its target length: the step's gradient is the mean of the tasks' own."""
    task, model, criterion, optimizer, _ = grounding_step(
        data, tmp_path, good_tasks(data), "--batch-mode", "round")
    train = task.datasets["train"]
    rows = [train[int(train.offsets[t]) + i] for t in (0, 1) for i in range(8)]
    round_sample = train.collater(rows)
    parts = round_sample["rounds"]
    assert [p["task_index"] for p in parts] == [0, 1]
    assert parts[0]["ntokens"] != parts[1]["ntokens"]  # a BOX's 5 tokens a row, a label's 2

    def gradient(sample):
        optimizer.zero_grad()
        _, sample_size, _ = task.train_step(sample, model, criterion, optimizer, 0)
        return {n: p.grad / sample_size for n, p in model.named_parameters()}, sample_size

    alone = [gradient(part)[0] for part in parts]
    together, sample_size = gradient(round_sample)
    assert sample_size == 2
    for name, value in together.items():
        assert torch.allclose(value, (alone[0][name] + alone[1][name]) / 2, atol=1e-7), name


def test_rounds_hold_the_tasks_of_their_updates_stage(data, tmp_path):
    task = multitask(good_tasks(data), tmp_path, batch_mode="round",
                     stages="{first: {until: 3, tasks: [nli]}, both: {tasks: [nli, grounding]}}")
    task.load_dataset("train")
    train = task.datasets["train"]

    def tasks_per_update(epoch):
        plan = task.get_batch_iterator(train, max_sentences=16, epoch=epoch).frozen_batches
        return [sorted({train.task_of(int(i)) for i in batch}) for batch in plan]

    # 96 rows a task, 16 a batch: an epoch is 6 rounds, and update 3 the second stage's first
    assert tasks_per_update(1) == [[0]] * 3 + [[0, 1]] * 3
    assert tasks_per_update(2) == [[0, 1]] * 6
