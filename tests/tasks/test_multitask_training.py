"""``--task multitask`` end to end with fairseq's own tools on CPU: a run killed with
SIGKILL resumes to the very losses of an uninterrupted one; two data-parallel CPU
processes train what one process with ``--update-freq 2`` trains (grounding's
``lr_scale`` on its own image adapter included); the Hydra demo
config composes, takes overrides and trains; bad task configurations fail before
training with messages naming task and key; a multitask checkpoint decodes as any
one of its tasks.

Every training subprocess runs with ``OMP_NUM_THREADS=1``: these models are tiny, and
on a busy 2-core machine torch's intra-op threads made each run about 4x slower
(the losses are the same either way).
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from fairseq.logging.meters import SumMeter

import ofasys_fairseq
from ofasys_fairseq import OFASys
import demo
import demo_tables
from demo_data import (NLI_INSTRUCTION, SHAPES_GROUNDING_INSTRUCTION, write_digits, write_shapes,
                       write_task)
from ofasys_fairseq.tasks.instruction_task import InstructionConfig, InstructionTask
from ofasys_fairseq.tasks.multitask_task import MultitaskTask
from ofasys_fairseq.tasks.task_specs import TaskConfigError, parse_tasks
from tests.helpers import (multitask_task, sentences, train_updates, valid_lines,
                           write_jsonl)

USER_DIR = os.path.dirname(os.path.abspath(ofasys_fairseq.__file__))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NLI_LABELS = {"yes", "no", "maybe"}
# A 2-task run (text classification + visual grounding) small enough for seconds.
MODEL_ARGS = ["--arch", "ofasys_tiny", "--embed-dim", "64", "--ffn-embed-dim", "128",
              "--encoder-layers", "1", "--decoder-layers", "1", "--dropout", "0",
              "--vocab-size", "200", "--image-size", "64", "--image-adaptor", "vit",
              "--vit-patch-size", "8", "--num-bins", "16", "--criterion", "instruction_ce",
              "--optimizer", "adam", "--lr", "0.002", "--lr-scheduler", "inverse_sqrt",
              "--warmup-updates", "20", "--num-workers", "0", "--log-format", "simple",
              "--log-interval", "1", "--no-epoch-checkpoints", "--seed", "1",
              "--best-checkpoint-metric", "score", "--maximize-best-checkpoint-metric"]


def fairseq_command(tool: str, *args) -> list:
    return [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)]


def run(command, cwd=None, expect_ok: bool = True) -> str:
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    if expect_ok:
        assert result.returncode == 0, output[-4000:]
    else:
        assert result.returncode != 0, output[-4000:]
    return output


def train_command(tasks_file, save_dir, *extra, launcher=None) -> list:
    command = launcher or fairseq_command("train")
    return command + ["--user-dir", USER_DIR, "--task", "multitask", "--tasks", str(tasks_file),
                      *MODEL_ARGS, "--save-dir", str(save_dir), *map(str, extra)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """nli (96 train rows) + shapes grounding (96 scenes), and a tasks file that reads
    them by paths relative to its own directory."""
    root = tmp_path_factory.mktemp("multitask")
    write_task(str(root), "nli", train=96, valid=16, seed=1)
    write_shapes(str(root), train=96, valid=16)
    tasks = {"tasks": {"nli": {"instruction": NLI_INSTRUCTION, "data": "nli"},
                       "grounding": {"instruction": SHAPES_GROUNDING_INSTRUCTION,
                                     "data": "shapes", "loss_weight": 2,
                                     "lr_scale": 2}}}  # its own image adapter at 2x
    (root / "tasks.yaml").write_text(json.dumps(tasks))  # JSON is YAML
    return root


# --- 1. a SIGKILLed run resumes to the uninterrupted run's losses ---------------------------

RESUME_ARGS = ["--batch-size", "16", "--save-interval-updates", "8"]


class Background:
    """A training subprocess whose output goes to a file (no pipe to fill and stall it)."""

    def __init__(self, command, log_path):
        self.log_path = log_path
        with open(log_path, "w") as log:
            # its own process group: stop() ends the launcher's rank processes with it
            self.process = subprocess.Popen(command, env=ENV, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait(self, timeout: float = 600) -> str:
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.stop()
        assert self.process.returncode == 0, self.log()[-4000:]
        return self.log()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """Run A per batch mode, 24 updates without interruption: ``start(mode)`` starts it
    in the background, ``get(mode)`` waits for it (cached for the module; test 5 decodes
    the homogeneous run's checkpoint)."""
    started, finished = {}, {}

    def start(mode: str) -> None:
        if mode not in started:
            save_dir = tmp_path_factory.mktemp(f"uninterrupted-{mode}")
            started[mode] = (save_dir, Background(
                train_command(data / "tasks.yaml", save_dir, *RESUME_ARGS, "--batch-mode",
                              mode, "--max-update", 24), save_dir.parent / f"{mode}.log"))

    def get(mode: str) -> dict:
        start(mode)
        if mode not in finished:
            save_dir, process = started[mode]
            finished[mode] = {"log": process.wait(), "save_dir": save_dir}
        return finished[mode]

    get.start = start
    yield get
    for _, process in started.values():
        process.stop()


def kill_after_checkpoint(data, save_dir) -> str:
    """Run B's first leg (homogeneous): start training, SIGKILL it as soon as its
    checkpoint at 8 updates exists; return that checkpoint."""
    # The same command as run A, but with a far-off --max-update so that the kill always
    # lands mid-training (nothing but the stopping point depends on it; if anything did,
    # the comparison with run A would fail).
    save_dir.mkdir()
    leg = Background(train_command(data / "tasks.yaml", save_dir, *RESUME_ARGS,
                                   "--batch-mode", "homogeneous", "--max-update", 100000),
                     save_dir / "killed.log")
    try:
        deadline = time.time() + 300
        while not glob.glob(str(save_dir / "checkpoint_*_8.pt")):
            assert leg.process.poll() is None, leg.log()[-4000:]
            assert time.time() < deadline, "no checkpoint at 8 updates after 300 s"
            time.sleep(0.005)
        # fairseq writes a checkpoint to a .tmp file and renames it: the name means complete
        leg.process.send_signal(signal.SIGKILL)
        leg.process.wait(timeout=60)
    finally:
        leg.stop()
    assert leg.process.returncode == -signal.SIGKILL
    killed_at = max(train_updates(leg.log()))
    assert 8 <= killed_at < 24, killed_at  # killed mid-run, before run A's end
    checkpoint, = glob.glob(str(save_dir / "checkpoint_*_8.pt"))
    return checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["homogeneous", "mixed", "round"])
def test_killed_run_resumes_to_the_same_losses_and_tasks(data, uninterrupted, tmp_path, mode):
    """Run A trains 24 updates; run B resumes from a checkpoint at 8 updates (mid-epoch)
    to 24: updates 9..24 are the same in both, field for field. In homogeneous mode run B
    is killed with SIGKILL right after saving that checkpoint; the other modes (to save
    time) resume from run A's own checkpoint at 8 updates."""
    save_dir = tmp_path / "resumed"
    if mode == "homogeneous":
        uninterrupted.start(mode)  # the two legs share the cores
        checkpoint = kill_after_checkpoint(data, save_dir)
    else:
        checkpoint, = glob.glob(str(uninterrupted(mode)["save_dir"] / "checkpoint_*_8.pt"))
    a = uninterrupted(mode)

    resumed = run(train_command(data / "tasks.yaml", save_dir, *RESUME_ARGS,
                                "--batch-mode", mode, "--max-update", 24,
                                "--restore-file", checkpoint))
    assert re.search(rf"Loaded checkpoint {re.escape(checkpoint)} \(epoch \d+ @ 8 updates\)",
                     resumed), resumed[-3000:]
    a_updates, b_updates = train_updates(a["log"]), train_updates(resumed)
    assert sorted(a_updates) == list(range(1, 25))
    assert sorted(b_updates) == list(range(9, 25))
    # the checkpoint falls mid-epoch: the resumed iterator skips the batches trained
    epoch, position, _ = a_updates[9]
    assert position > 1 and b_updates[9][:2] == (epoch, position)
    for update in range(9, 25):
        # every field but timings, as printed: loss, each task's loss / tokens / samples
        # (which task(s) trained the update), gnorm, lr, epoch and position
        assert b_updates[update] == a_updates[update], update
        assert any(k.endswith("_samples") and v != "0" for k, v in b_updates[update][2].items())
    # both tasks train within updates 9..24
    trained = {k for u in range(9, 25) for k, v in b_updates[u][2].items()
               if k.endswith("_samples") and v != "0"}
    assert trained == {"nli_samples", "grounding_samples"}
    a_valid, b_valid = valid_lines(a["log"]), valid_lines(resumed)
    assert 24 in b_valid and {u: a_valid[u] for u in b_valid} == b_valid


# --- 2. two CPU processes train what one process with --update-freq 2 trains ----------------

# Summation order: one process accumulates the second micro-batch's gradient into the
# first's inside backward, two processes add whole gradients in gloo's all-reduce; the
# float32 sums differ in the last bits and Adam carries that on. fairseq prints losses
# to 3 decimals; observed: at most 0.001 (one last printed digit, at update 9 of 12).
LOSS_TOLERANCE = 2e-3
PARALLEL_ARGS = ["--batch-size", "8", "--max-update", "12"]


@pytest.fixture(scope="module")
def parallel_runs(data, tmp_path_factory):
    """Per batch mode: (2 processes x --batch-size 8, 1 process x --batch-size 8
    --update-freq 2), run side by side."""
    runs = {}

    def get(mode: str):
        if mode not in runs:
            root = tmp_path_factory.mktemp(f"parallel-{mode}")
            two = Background(
                train_command(data / "tasks.yaml", root / "two", *PARALLEL_ARGS,
                              "--batch-mode", mode, launcher=[
                                  sys.executable, "-m", "ofasys_fairseq.distributed_cpu",
                                  "--nprocs", "2"]), root / "two.log")
            try:
                one = run(train_command(data / "tasks.yaml", root / "one", *PARALLEL_ARGS,
                                        "--batch-mode", mode, "--cpu", "--update-freq", 2))
                two_log = two.wait()
            finally:
                two.stop()
            runs[mode] = (two_log, one)
        return runs[mode]
    return get


def numeric_fields(fields: dict, names) -> dict:
    return {k: float(v) for k, v in fields.items() if k in names and v != "None"}


def assert_same_batches(two: dict, one: dict) -> None:
    """Same updates, each with the same tasks, samples and target tokens."""
    assert sorted(two) == sorted(one) == list(range(1, 13))
    for update in one:
        counts = {k: v for k, v in one[update][2].items()
                  if k.endswith(("_samples", "_tokens")) or k in ("bsz", "wpb")}
        assert {k: two[update][2][k] for k in counts} == counts, update
        assert two[update][:2] == one[update][:2]


def loss_differences(two: dict, one: dict, updates) -> dict:
    """update -> largest absolute difference among its loss fields."""
    differences = {}
    for update in updates:
        names = [k for k in one[update][2] if k.endswith("loss")]
        a, b = numeric_fields(two[update][2], names), numeric_fields(one[update][2], names)
        assert a.keys() == b.keys(), update
        differences[update] = max(abs(a[k] - b[k]) for k in a)
    return differences


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_update_freq_2_in_mixed_mode(
        parallel_runs):
    """``mixed`` batches hold both tasks, so every parameter has a gradient at every
    update in both runs: the runs are the same training up to summation order."""
    two_log, one_log = parallel_runs("mixed")
    assert "distributed init (rank 1)" in two_log
    assert "'distributed_world_size': 2" in two_log
    assert "training on 2 devices" in two_log
    two, one = train_updates(two_log), train_updates(one_log)
    assert_same_batches(two, one)
    differences = loss_differences(two, one, range(1, 13))
    assert max(differences.values()) <= LOSS_TOLERANCE, differences
    (u2, v2), = valid_lines(two_log).items()
    (u1, v1), = valid_lines(one_log).items()
    assert u1 == u2 == 12
    for key in ("nli_accuracy", "grounding_box_acc", "score"):
        assert v2[key] == v1[key], key
    assert abs(float(v2["loss"]) - float(v1["loss"])) <= LOSS_TOLERANCE


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_in_homogeneous_mode(parallel_runs):
    two_log, one_log = parallel_runs("homogeneous")
    assert "distributed init (rank 1)" in two_log and "training on 2 devices" in two_log
    two, one = train_updates(two_log), train_updates(one_log)
    assert_same_batches(two, one)
    # the two slots of an update (2 ranks / 2 micro-batches) may draw different tasks; in
    # updates without grounding the image adapter gets a zero gradient in both runs
    text_only = [u for u in one if one[u][2]["grounding_samples"] == "0"]
    both = [u for u in one if "0" not in (one[u][2]["nli_samples"],
                                          one[u][2]["grounding_samples"])]
    assert text_only and both
    differences = loss_differences(two, one, range(1, 13))
    assert max(differences.values()) <= LOSS_TOLERANCE, differences


# --- 3. the Hydra demo config -----------------------------------------------------------------

DEMO_TASKS = {"nli": "nli", "translation": "translation", "digits": "digits",
              "shapes_caption": "shapes", "shapes_vqa": "shapes", "shapes_grounding": "shapes",
              "shapes_region_caption": "shapes",
              **{name: name for name in demo_tables.TABLE_TASKS}}
# every task's weight, whatever the config sets: nli 2, the others 1. '++' sets a key
# whether the config has it or not.
WEIGHTS = [f"++task.tasks.{task}.weight={2 if task == 'nli' else 1}" for task in DEMO_TASKS]


def compose_demo(repo_root, overrides):
    """configs/multitask_demo.yaml as fairseq-hydra-train composes it (Hydra 1.1
    semantics, fairseq's schema and defaults), resolved."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    hydra_init("multitask_demo")
    with initialize_config_dir(config_dir=os.path.join(repo_root, "configs"),
                               version_base="1.1"):
        cfg = compose(config_name="multitask_demo", overrides=overrides)
    add_defaults(cfg)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def test_hydra_demo_config_composes_with_overrides(repo_root):
    from fairseq import tasks

    cfg = compose_demo(repo_root, [*WEIGHTS, "task.batch_mode=mixed",
                                   "task.tasks.digits.data=elsewhere", "model.embed_dim=32"])
    assert cfg.task._name == "multitask" and cfg.model.embed_dim == 32
    task = tasks.setup_task(cfg.task)  # checks every spec; reads no data
    assert isinstance(task, MultitaskTask)
    assert task.task_names == list(DEMO_TASKS)
    specs = {s.name: s for s in task.specs}
    assert [s.weight.at(0) for s in task.specs] == [2] + [1] * 10
    assert specs["digits"].data == "elsewhere"
    assert specs["shapes_grounding"].metrics == ["box_acc"]
    assert str(task.cfg.batch_mode) == "mixed"


def test_hydra_demo_config_trains_rounds_of_every_task_from_the_first_update(repo_root):
    from fairseq import tasks

    cfg = compose_demo(repo_root, [])
    task = tasks.setup_task(cfg.task)
    assert str(task.cfg.batch_mode) == "round"
    schedule = task.sampling_schedule([range(10)] * len(DEMO_TASKS))  # sizes: unused
    last = cfg.optimization.max_update - 1
    for update in (0, last):
        assert [name for name, share in zip(task.task_names, schedule.at(update))
                if share > 0] == list(DEMO_TASKS)


@pytest.mark.parametrize("overrides", [
    ["optimization.max_update=600", "task.batch_mode=homogeneous",
     "++task.tasks.shapes_vqa.weight=2"],
    ["++task.tasks.nli.loss_weight=2"],
])
def test_hydra_demo_config_documented_overrides(repo_root, overrides):
    from fairseq import tasks

    cfg = compose_demo(repo_root, overrides)
    specs = {s.name: s for s in tasks.setup_task(cfg.task).specs}  # accepted
    if "task.batch_mode=homogeneous" in overrides:
        assert cfg.optimization.max_update == 600
        assert specs["shapes_vqa"].weight.at(0) == 2
    else:
        assert specs["nli"].loss_weight == 2


@pytest.mark.slow
def test_hydra_train_runs_the_demo_config_on_every_task(repo_root, tmp_path):
    data = tmp_path / "data"
    for name in ("nli", "translation"):
        write_task(str(data), name, train=24, valid=4, seed=1)
    write_digits(str(data), train=24, valid=4)
    write_shapes(str(data), train=24, valid=4)
    for name in demo_tables.TABLE_TASKS:
        demo_tables.write_table_task(str(data), name, train=24, valid=4)
    overrides = [f"task.tasks.{task}.data={data / folder}" for task, folder in DEMO_TASKS.items()]
    log = run(fairseq_command(
        "hydra_train", "--config-dir", os.path.join(repo_root, "configs"),
        "--config-name", "multitask_demo", *overrides,
        "optimization.max_update=3", "model.embed_dim=32", "model.ffn_embed_dim=64",
        "model.encoder_layers=1", "model.decoder_layers=1", "dataset.batch_size=8",
        "common.log_interval=1", "dataset.disable_validation=true",
        f"checkpoint.save_dir={tmp_path / 'checkpoints'}", f"common.user_dir={USER_DIR}"),
        cwd=str(tmp_path))  # the config's hydra.run.dir is '.': keep .hydra/ out of the repo
    assert f"rounds: a batch of each of {', '.join(DEMO_TASKS)}" in log
    updates = train_updates(log)
    assert sorted(updates) == [1, 2, 3]
    for update in updates.values():  # rounds: a batch of every task in each update
        assert all(update[2][f"{task}_samples"] != "0" for task in DEMO_TASKS), update
    assert all(re.fullmatch(r"\d+\.?\d*", updates[u][2]["loss"]) for u in updates)
    assert (tmp_path / "checkpoints" / "checkpoint_last.pt").exists()
    for task in DEMO_TASKS:  # every task's data was loaded from the overridden paths
        assert f"train: task {task}: 24 examples from {data}" in log
    # make demo's console reads this very output: one short line for the epoch, nothing
    # from the other lines (Hydra's warnings among them)
    shown = [line for line in map(demo.progress_line, log.splitlines()) if line]
    assert len(shown) == 1, shown
    assert re.fullmatch(r"epoch 001: 3 updates, loss [\d.]+, [\d.]+ updates/s", shown[0])


# --- 4. bad configurations fail before training ----------------------------------------------

def multitask(tasks, tmp_path, **overrides) -> MultitaskTask:
    return multitask_task(tasks, tmp_path, image_size=64, image_adaptor="vit",
                          vit_patch_size=8, **overrides)


def good_tasks(data) -> dict:
    return {"nli": {"instruction": NLI_INSTRUCTION, "data": str(data / "nli")},
            "grounding": {"instruction": SHAPES_GROUNDING_INSTRUCTION,
                          "data": str(data / "shapes")}}


def test_good_tasks_set_up_and_load(data, tmp_path):
    task = multitask(good_tasks(data), tmp_path)
    task.load_dataset("valid")
    assert len(task.datasets["valid"]) == 32
    assert [s.metrics for s in task.specs] == [["accuracy"], ["box_acc"]]


@pytest.mark.parametrize("change, sampling, message", [
    pytest.param({"nli": {"wieght": 2}}, "weights",
                 r"task 'nli': unknown key 'wieght' \(did you mean 'weight'\?\)",
                 id="unknown-key"),
    pytest.param({"grounding": {"loss_wieght": 2}}, "weights",
                 r"task 'grounding': unknown key 'loss_wieght' \(did you mean 'loss_weight'\?\)",
                 id="unknown-loss-key"),
    pytest.param({"nli": {"weight": -1}}, "weights",
                 r"tasks.nli.weight: must be a number >= 0, got -1", id="negative-weight"),
    pytest.param({"grounding": {"loss_weight": -0.5}}, "weights",
                 r"task 'grounding': loss_weight must be a number >= 0",
                 id="negative-loss-weight"),
    pytest.param({"nli": {"weight": 0}, "grounding": {"weight": 0}}, "weights",
                 r"every task has weight 0", id="all-weights-zero"),
    pytest.param({"nli": {"weight": 2}}, "uniform",
                 r"task\(s\) nli set 'weight', which only task_sampling 'weights' uses "
                 r"\(it is 'uniform'\)", id="weight-with-uniform-sampling"),
    pytest.param({"grounding": {"weight": 3}}, "size",
                 r"task\(s\) grounding set 'weight'.*'size'", id="weight-with-size-sampling"),
    pytest.param({"nli": {"instruction": None}}, "weights",
                 r"task 'nli': 'instruction' is required", id="no-instruction"),
    pytest.param({"grounding": {"data": ""}}, "weights",
                 r"task 'grounding': 'data' is required", id="no-data"),
    pytest.param({"nli": {"size_cap": 10}}, "weights",
                 r"task\(s\) nli set 'size_cap'", id="size-cap-with-weights-sampling"),
    pytest.param({"nli": {"batch_size": 0}}, "weights",
                 r"task 'nli': batch_size must be a positive", id="zero-batch-size"),
    pytest.param({"nli": {"eval_max_len": 0}}, "weights",
                 r"task 'nli': eval_max_len must be a positive", id="zero-eval-max-len"),
])
def test_bad_task_specs_fail_at_setup(data, tmp_path, change, sampling, message):
    tasks = good_tasks(data)
    for name, values in change.items():
        tasks[name].update(values)
        tasks[name] = {k: v for k, v in tasks[name].items() if v is not None}
    with pytest.raises(TaskConfigError, match=message):
        multitask(tasks, tmp_path, task_sampling=sampling)


def test_round_batches_refuse_weights_they_would_ignore(data, tmp_path):
    tasks = good_tasks(data)
    tasks["nli"]["weight"] = 2
    with pytest.raises(TaskConfigError, match=r"task\(s\) nli set 'weight' or 'size_cap', "
                                              r"which batch_mode 'round' does not use"):
        multitask(tasks, tmp_path, batch_mode="round")
    del tasks["nli"]["weight"]
    assert multitask(tasks, tmp_path, batch_mode="round").task_names == ["nli", "grounding"]


def test_the_selection_score_counts_an_error_rate_as_its_complement(data, tmp_path):
    (tmp_path / "copy").mkdir()
    for split in ("train", "valid"):
        write_jsonl(tmp_path / "copy" / f"{split}.jsonl",
                    [{"src": s, "tgt": s} for s in sentences(20, seed=len(split))])
    tasks = {"copy": {"instruction": "[TEXT:src] -> [TEXT:tgt]", "data": str(tmp_path / "copy"),
                      "metrics": ["wer"]},
             "nli": good_tasks(data)["nli"]}
    task = multitask(tasks, tmp_path)
    meters = {}
    for key, value in {"_copy_wer_errors": 25, "_copy_wer_words": 100, "_nli_correct": 60,
                       "_nli_total": 100}.items():
        meters[key] = SumMeter()
        meters[key].update(value)
    assert task._selection_score(meters) == (100 - 25 + 60) / 2
    meters["_copy_wer_errors"].update(400)  # a WER of 425: babbling counts as 0
    assert task._selection_score(meters) == (0 + 60) / 2


@pytest.mark.parametrize("task, metric, supported", [
    ("nli", "box_acc", "accuracy"), ("grounding", "bleu", "box_acc")])
def test_a_metric_the_target_does_not_support(data, tmp_path, task, metric, supported):
    tasks = good_tasks(data)
    tasks[task]["metrics"] = [metric]
    with pytest.raises(TaskConfigError, match=rf"task '{task}': metric\(s\) {metric} are not "
                                              rf"available for its target; it supports "
                                              rf"{supported}"):
        multitask(tasks, tmp_path)


def test_missing_data_names_every_task_and_subset_before_reading(data, tmp_path):
    no_train = tmp_path / "no-train"
    no_train.mkdir()
    (no_train / "valid.jsonl").write_text((data / "nli" / "valid.jsonl").read_text())
    tasks = good_tasks(data)
    tasks["nli"]["data"] = str(no_train)
    tasks["grounding"]["data"] = str(tmp_path / "nowhere")
    task = multitask(tasks, tmp_path)  # set-up reads no data
    with pytest.raises(TaskConfigError) as info:
        task.load_dataset("valid")
    lines = str(info.value).splitlines()
    assert len(lines) == 3, lines  # every problem at once
    assert re.match(r"task 'nli': .*no-train: no data file for subset 'train'.*"
                    r"found \['valid.jsonl'\]", lines[0]), lines
    assert re.match(r"task 'grounding': .*nowhere: no data file for subset 'train'", lines[1])
    assert re.match(r"task 'grounding': .*nowhere: no data file for subset 'valid'", lines[2])


def test_a_tasks_eval_max_len_limits_its_validation_outputs(tmp_path):
    """A task's eval_max_len caps its own validation decoding; the others keep the run's
    --eval-max-len. An untrained model seldom stops early, so outputs reach the limit."""
    from fairseq import options, tasks as fairseq_tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    (tmp_path / "copy").mkdir()
    for split in ("train", "valid"):
        write_jsonl(tmp_path / "copy" / f"{split}.jsonl",
                    [{"src": s, "tgt": s} for s in sentences(8, seed=len(split))])
    copy = {"instruction": "[TEXT:src] -> [TEXT:tgt]", "data": str(tmp_path / "copy"),
            "metrics": ["bleu"]}
    (tmp_path / "tasks.yaml").write_text(json.dumps(
        {"tasks": {"short": {**copy, "eval_max_len": 2}, "long": copy}}), encoding="utf-8")
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "--task", "multitask", "--tasks", str(tmp_path / "tasks.yaml"),
        "--eval-max-len", "40", *MODEL_ARGS, "--save-dir", str(tmp_path / "checkpoints")])
    cfg = convert_namespace_to_omegaconf(args)
    task = fairseq_tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(1)  # the same untrained model whatever ran before
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    dataset = task.datasets["valid"]
    longest = {}
    for batch in dataset.batch_by_size(dataset.ordered_indices(), max_sentences=8):
        sample = dataset.collater([dataset[i] for i in batch])
        name = task.task_names[sample["task_index"]]
        longest[name] = max(len(p) for p in task.validation_predictions(model, sample))
        _, _, log = task.valid_step(sample, model, criterion)  # what it scores
        assert log[f"_{name}_bleu_ref_len"] > 0
    assert longest["short"] <= 2 + 1  # two tokens, then the forced end
    assert longest["long"] > 2 + 1


def test_a_task_subset_other_than_the_runs(data, tmp_path):
    tasks = good_tasks(data)
    tasks["nli"]["valid_subset"] = "dev"
    with pytest.raises(TaskConfigError, match=r"task 'nli': .*subset 'dev'"):
        multitask(tasks, tmp_path).load_dataset("valid")


def test_tasks_file_problems(data, tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(TaskConfigError, match=rf"--tasks {re.escape(str(missing))}: no such file"):
        parse_tasks(str(missing), None, "weights")
    not_tasks = tmp_path / "not_tasks.yaml"
    not_tasks.write_text("nli: {instruction: x, data: y}\n")
    with pytest.raises(TaskConfigError, match="expected a mapping 'tasks:'"):
        parse_tasks(str(not_tasks), None, "weights")
    with pytest.raises(TaskConfigError, match="no tasks"):
        parse_tasks({}, None, "weights")
    # relative data paths are read from the file's directory
    specs, stages = parse_tasks(str(data / "tasks.yaml"), None, "weights")
    assert [s.data for s in specs] == [str(data / "nli"), str(data / "shapes")]
    assert [s.loss_weight for s in specs] == [1.0, 2] and stages == []


def test_cli_fails_before_training(data, tmp_path):
    """A task whose folder has no training file: fairseq-train stops while loading the
    validation data, before building anything, naming the task, the folder and subset."""
    tasks = json.loads((data / "tasks.yaml").read_text())["tasks"]
    for values in tasks.values():
        values["data"] = str(data / values["data"])
    (tmp_path / "empty").mkdir()
    tasks["grounding"]["data"] = str(tmp_path / "empty")
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"tasks": tasks}))
    log = run(train_command(bad, tmp_path / "checkpoints", "--batch-size", "16",
                            "--max-update", 2), expect_ok=False)
    assert (f"TaskConfigError: task 'grounding': {tmp_path / 'empty'}: no data file for "
            f"subset 'train'") in log, log[-3000:]
    assert f"task 'grounding': {tmp_path / 'empty'}: no data file for subset 'valid'" in log
    assert "task 'nli'" not in log
    assert "train_inner" not in log and "begin training epoch" not in log
    assert not (tmp_path / "checkpoints" / "checkpoint_last.pt").exists()


# --- 5. a multitask checkpoint decodes as each of its tasks -----------------------------------

@pytest.mark.slow
def test_multitask_checkpoint_decodes_per_task(data, uninterrupted):
    checkpoint = str(uninterrupted("homogeneous")["save_dir"] / "checkpoint_last.pt")
    out = run(fairseq_command("generate", data / "nli", "--user-dir", USER_DIR,
                              "--task", "instruction", "--trained-task", "nli",
                              "--path", checkpoint, "--gen-subset", "valid", "--batch-size", 16,
                              "--cpu"))
    # D- lines: detokenized by the task; H- lines: the pieces (no --post-process)
    labels = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M))
    pieces = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", out, re.M))
    assert len(labels) == 16 and pieces.keys() == labels.keys()
    assert set(labels.values()) <= NLI_LABELS, labels  # the closed set of the task
    assert all(pieces[i] == "\u2581" + label for i, label in labels.items()), pieces

    boxes = run(fairseq_command("generate", data / "shapes", "--user-dir", USER_DIR,
                                "--task", "instruction", "--trained-task", "grounding",
                                "--path", checkpoint, "--gen-subset", "valid",
                                "--batch-size", 16, "--cpu"))
    assert len(re.findall(r"^S-\d+\twhich region does the text \" \w+ \w+ \" describe\?$",
                          boxes, re.M)) == 16  # grounding's instruction
    box_pieces = re.findall(r"^H-\d+\t\S+\t(.*)$", boxes, re.M)
    assert len(box_pieces) == 16
    # decoding allows exactly four location tokens, printed as fractions in D- lines, with
    # x1 > x0 and y1 > y0 (unless x0 / y0 is already the last bin)
    assert all(re.fullmatch(r"<bin_\d+>( <bin_\d+>){3}", h) for h in box_pieces), box_pieces
    fractions = re.findall(r"^D-\d+\t\S+\t(.*)$", boxes, re.M)
    assert len(fractions) == 16
    for line in fractions:
        assert re.fullmatch(r"[01]\.\d{3}(,[01]\.\d{3}){3}", line), line
        x0, y0, x1, y1 = map(float, line.split(","))
        assert (x1 > x0 or x0 == 1.0) and (y1 > y0 or y0 == 1.0), line

    # from Python: the tasks' instructions, and decoding as one of them
    model = OFASys.from_pretrained(checkpoint)
    assert model.instructions == {"nli": NLI_INSTRUCTION,
                                  "grounding": SHAPES_GROUNDING_INSTRUCTION}
    rows = [{"premise": "the red cat sleeps in the park",
             "hypothesis": "the cat sleeps in the park"}] * 2
    assert {r["label"] for r in model.inference(task="nli", data=rows)} <= NLI_LABELS
    # where its --tasks file is gone, the checkpoint's task state names the tasks
    moved = OFASys.from_pretrained(checkpoint, tasks=str(data / "gone" / "tasks.yaml"))
    assert moved.instructions == model.instructions
    assert moved.inference(task="nli", data=rows) == model.inference(task="nli", data=rows)
    with pytest.raises(ValueError, match=r"a multitask model: choose one of its tasks with "
                                         r"task= \(nli, grounding\)"):
        model.inference(data=rows)
    with pytest.raises(ValueError, match=r"no task 'caption'; this model's tasks are nli, "
                                         r"grounding"):
        model.inference(task="caption", data=rows)

    failed = run(fairseq_command("generate", data / "nli", "--user-dir", USER_DIR,
                                 "--task", "instruction", "--path", checkpoint,
                                 "--gen-subset", "valid", "--cpu"), expect_ok=False)
    assert ("this is a multitask checkpoint: name one of its tasks with --trained-task "
            "(nli, grounding)") in failed, failed[-3000:]
    # a name the checkpoint lacks: the same list (in-process: it is the task's check)
    task = InstructionTask.setup_task(InstructionConfig(trained_task="caption"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["task_state"]
    with pytest.raises(ValueError, match=r"--trained-task 'caption' is not one of its tasks "
                                         r"\(nli, grounding\)"):
        task.load_state_dict(state)
