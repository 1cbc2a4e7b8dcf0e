"""The checkpoint allow-list: fairseq checkpoints load with torch's weights_only
unpickler; anything pickling other globals is refused, by name, without running it."""
import argparse
import collections
import json
import os
import pickle

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

import ofasys_fairseq  # noqa: F401  (registers the allow-list, as --user-dir does)
from ofasys_fairseq.checkpoint_safety import (FAIRSEQ_CHECKPOINT_GLOBALS, UnsafeCheckpointError,
                                              check_checkpoint_is_safe)


class Custom:
    """An arbitrary user class: never part of a fairseq checkpoint."""

    def __init__(self, value):
        self.value = value


class NamespaceSubclass(argparse.Namespace):
    pass


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fairseq_shaped_state():
    """What fairseq-train puts in a checkpoint: legacy args, a plain-dict cfg, tensors,
    optimizer history and our task state (sentencepiece bytes, symbols, labels)."""
    return {
        "args": argparse.Namespace(arch="ofasys_tiny", lr=[0.001], user_dir=None),
        "cfg": {"model": {"_name": "ofasys", "embed_dim": 16}, "task": {"data": "/d"}},
        "model": collections.OrderedDict(w=torch.randn(3, 4), b=torch.zeros(4)),
        "optimizer_history": [{"criterion_name": "X", "num_updates": 3, "lr_scheduler_state":
                               {"best": 1.5}}],
        "extra_state": {"epoch": 2, "train_iterator": {"epoch": 2, "iterations_in_epoch": 0},
                        "val_loss": 2.25, "metrics": {}},
        "last_optimizer_state": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []},
        "task_state": {"instruction": "[TEXT:a] -> [TEXT:b]",
                       "vocabulary": {"sentencepiece_model": b"\x0a\x01", "num_bins": 4,
                                      "symbols": ["<s>", "<pad>"]},
                       "labels": {"b": ["yes", "no"]}},
    }


def test_allow_list_is_exactly_argparse_namespace():
    assert FAIRSEQ_CHECKPOINT_GLOBALS == (argparse.Namespace,)
    safe = torch.serialization.get_safe_globals()
    assert argparse.Namespace in safe
    assert Custom not in safe and NamespaceSubclass not in safe


def test_fairseq_shaped_checkpoint_passes_and_loads_weights_only(tmp_path):
    path = tmp_path / "ok.pt"
    state = fairseq_shaped_state()
    torch.save(state, path)
    check_checkpoint_is_safe(str(path))  # no exception
    loaded = torch.load(path, weights_only=True)
    assert loaded["args"] == state["args"]
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["task_state"] == state["task_state"]


def test_checkpoint_written_by_fairseqs_trainer_passes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "train.jsonl", "w") as f:
        f.writelines(json.dumps({"a": f"the cat {i}", "b": "yes"}) + "\n" for i in range(8))
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data), "--task", "instruction", "--instruction", "[TEXT:a] -> [TEXT:b]",
        "--arch", "ofasys_tiny", "--embed-dim", "16", "--ffn-embed-dim", "32",
        "--encoder-layers", "1", "--decoder-layers", "1", "--vocab-size", "30",
        "--num-bins", "4", "--cpu", "--criterion", "instruction_ce", "--optimizer", "adam",
        "--lr", "0.001", "--batch-size", "4", "--save-dir", str(tmp_path / "checkpoints")])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    task.load_dataset("train")
    dataset = task.datasets["train"]
    trainer.train_step([dataset.collater([dataset[i] for i in range(4)])])  # Adam state
    path = tmp_path / "checkpoint_last.pt"
    trainer.consolidate_optimizer()  # as checkpoint_utils.save_checkpoint does
    trainer.save_checkpoint(str(path), {"epoch": 1, "val_loss": 1.0})
    check_checkpoint_is_safe(str(path))
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["task_state"]["instruction"] == "[TEXT:a] -> [TEXT:b]"
    assert state["optimizer_history"][-1]["num_updates"] == 1
    assert state["last_optimizer_state"]["state"]  # Adam moments were saved and read back


def test_os_system_is_refused_by_name_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    state = fairseq_shaped_state()
    state["extra_state"]["payload"] = SystemCall(marker)
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system") as info:
        check_checkpoint_is_safe(str(path))
    assert str(path) in str(info.value)
    assert not marker.exists()
    # torch's own unpickler refuses it too (what the fairseq command-line tools hit)
    with pytest.raises(pickle.UnpicklingError, match=r"(posix|os)\.system"):
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("payload, name", [
    (Custom(3), f"{Custom.__module__}.Custom"),
    (NamespaceSubclass(x=1), f"{NamespaceSubclass.__module__}.NamespaceSubclass"),
    (collections.defaultdict(list), "collections.defaultdict"),
    (slice(1, 5), "builtins.slice"),
])
def test_globals_outside_the_allow_list_are_refused(tmp_path, payload, name):
    path = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.ones(1)}, "extra": payload}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        check_checkpoint_is_safe(str(path))
    assert name in str(info.value)


def test_every_unsafe_global_is_named(tmp_path):
    path = tmp_path / "two.pt"
    torch.save({"a": Custom(1), "b": slice(2)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        check_checkpoint_is_safe(str(path))
    assert f"{Custom.__module__}.Custom" in str(info.value)
    assert "builtins.slice" in str(info.value)
