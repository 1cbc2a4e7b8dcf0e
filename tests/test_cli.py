"""The console scripts ``pip install`` puts on the path: fairseq's tools with this
plugin's ``--user-dir`` filled in, run from a directory that knows nothing of the
repository, and the CPU launcher's refusals."""
import os
import random
import subprocess
import sys

import pytest
import torch

import ofasys_fairseq  # noqa: F401  (the checkpoint allow-list, for reading checkpoints)
from ofasys_fairseq import distributed_cpu
from tests.test_end_to_end import INSTRUCTION, MODEL_ARGS, review_example, write_rows

BIN = os.path.dirname(sys.executable)  # the virtual environment's scripts


def script(name: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, name), *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    data = tmp_path_factory.mktemp("reviews")
    rng = random.Random(0)
    write_rows(data / "train.jsonl", [review_example(rng) for _ in range(200)])
    write_rows(data / "valid.jsonl", [review_example(rng) for _ in range(40)])
    return data


@pytest.mark.slow
def test_ofasys_train_needs_no_user_dir(reviews, tmp_path):
    save_dir = tmp_path / "ck"
    result = script("ofasys-train", str(reviews), "--task", "instruction", "--instruction",
                    INSTRUCTION, *MODEL_ARGS, "--max-epoch", "1", "--save-dir", str(save_dir),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert state["task_state"]["instruction"] == INSTRUCTION
    assert state["cfg"]["common"]["user_dir"] == os.path.dirname(ofasys_fairseq.__file__)


@pytest.mark.slow
def test_ofasys_hydra_train_needs_no_user_dir(reviews, repo_root, tmp_path):
    save_dir = tmp_path / "ck"
    result = script("ofasys-hydra-train", "--config-dir", os.path.join(repo_root, "configs"),
                    "--config-name", "nli_demo", f"task.data={reviews}",
                    f"task.instruction='{INSTRUCTION}'", "optimization.max_epoch=1",
                    "model.encoder_layers=1", "model.decoder_layers=1", "model.embed_dim=64",
                    "model.ffn_embed_dim=128", f"checkpoint.save_dir={save_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["task"]["instruction"] == INSTRUCTION
    assert state["cfg"]["model"]["encoder_layers"] == 1


@pytest.mark.parametrize("args, message", [
    (["--nprocs", "0"], "ofasys-train-cpu: --nprocs must be at least 1"),
    (["--ddp-backend", "c10d"], "ofasys-train-cpu sets --ddp-backend legacy_ddp itself"),
    (["--ddp-backend=pytorch_ddp"], "leave the option out"),
])
def test_cpu_launcher_refuses_what_it_cannot_run(args, message):
    # in process: the refusals come before fairseq parses anything (the console script
    # itself runs in test_two_cpu_processes_match_one_process_*)
    with pytest.raises(SystemExit) as refused:
        distributed_cpu.main([*args, "--task", "instruction"])
    assert message in str(refused.value.code)
