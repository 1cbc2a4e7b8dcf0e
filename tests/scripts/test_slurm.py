"""The SLURM batch scripts, rendered with DRY_RUN=1 under a fake SLURM job: the srun
command they print must name overrides fairseq's config accepts, and fairseq's own
SLURM initialisation must derive the same world size from the same environment."""
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from fairseq.dataclass.configs import FairseqConfig
from fairseq.distributed import utils as distributed_utils
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

SLURM_DIR = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
REPO = SLURM_DIR.parents[1]
SCRIPTS = ["train_single_node.sbatch", "train_multi_node.sbatch"]
GPUS = 8
JOB_ID = 123456
PORT = 10000 + JOB_ID % 20000
HOSTS = ["gpu-001", "gpu-002"]
NODELIST = "gpu-[001-002]"
EXTRA = ["optimization.max_update=10", "optimization.lr=[0.1]"]
# Variables of the scripts (and fairseq) that must not leak in from the test's shell.
OWN_VARS = {"CONFIG_DIR", "CONFIG_NAME", "VENV", "PORT", "MASTER_PORT", "MASTER_ADDR",
            "REPO_ROOT", "DRY_RUN", "RANK", "WORLD_SIZE"}


def sbatch_options(script):
    """The ``#SBATCH --key=value`` header as a dict."""
    text = (SLURM_DIR / script).read_text()
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", text, flags=re.M))


def fake_job(nodes, venv, **overrides):
    """The environment sbatch gives the batch script for ``nodes`` × GPUS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in OWN_VARS}
    env.update(SLURM_JOB_ID=str(JOB_ID), SLURM_NNODES=str(nodes), SLURM_JOB_NUM_NODES=str(nodes),
               SLURM_NTASKS_PER_NODE=str(GPUS), SLURM_NTASKS=str(nodes * GPUS),
               SLURM_GPUS_PER_NODE=f"h100:{GPUS}", SLURM_JOB_NODELIST=NODELIST if nodes > 1 else HOSTS[0],
               SLURM_SUBMIT_DIR=str(REPO), VENV=str(venv), DRY_RUN="1")
    env.update(overrides)
    return env


def render(script_path, env, *args):
    proc = subprocess.run(["bash", str(script_path), *args], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def parse_srun(line):
    """(config dir, config name, [overrides]) of the printed srun line."""
    argv = shlex.split(line)
    assert argv[:3] == ["srun", "--kill-on-bad-exit=1", "ofasys-hydra-train"], argv
    assert argv[3] == "--config-dir" and argv[5] == "--config-name", argv
    return argv[4], argv[6], argv[7:]


def check_fairseq_accepts(overrides):
    """Each ``group.key=value`` must name a field of that group's dataclass in
    FairseqConfig, and the value must fit the field's type (choices included)."""
    defaults = FairseqConfig()
    merged = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        group, key = override.key_or_group.split(".", 1)
        schema = getattr(defaults, group)
        assert dataclasses.is_dataclass(schema), f"{group} is not a config group"
        assert key in {f.name for f in dataclasses.fields(schema)}, f"{group} has no field {key}"
        merged.setdefault(group, {})[key] = override.value()
    return OmegaConf.merge(OmegaConf.structured(FairseqConfig), merged)  # raises on a bad value


@pytest.fixture
def venv(tmp_path):
    """A stand-in virtualenv: the scripts only check and source its activate file."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "activate").touch()
    return tmp_path / "venv"


@pytest.mark.parametrize("script", SCRIPTS)
def test_valid_bash_with_one_task_per_gpu(script):
    subprocess.run(["bash", "-n", str(SLURM_DIR / script)], check=True)
    options = sbatch_options(script)
    assert options["ntasks-per-node"] == options["gpus-per-node"] == str(GPUS)
    assert options["nodes"] == ("1" if "single" in script else "2")


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_the_training_command(script, venv):
    nodes = int(sbatch_options(script)["nodes"])
    lines = render(SLURM_DIR / script, fake_job(nodes, venv), *EXTRA)
    assert lines[0] == f"source {venv}/bin/activate"
    assert len(lines) == 2
    config_dir, config_name, overrides = parse_srun(lines[1])
    assert (config_dir, config_name) == (str(REPO / "configs"), "multitask_demo")
    assert overrides[-len(EXTRA):] == EXTRA
    cfg = check_fairseq_accepts(overrides)
    assert cfg.distributed_training.distributed_port == PORT
    assert cfg.distributed_training.distributed_world_size == nodes * GPUS
    assert cfg.distributed_training.ddp_backend == "legacy_ddp"
    assert cfg.common.cpu is False
    assert cfg.optimization.max_update == 10 and list(cfg.optimization.lr) == [0.1]


def test_environment_overrides(venv, tmp_path):
    env = fake_job(2, venv, CONFIG_DIR=str(tmp_path), CONFIG_NAME="other", MASTER_PORT="29500")
    del env["SLURM_NTASKS_PER_NODE"]  # fairseq's fallback: SLURM_NTASKS / SLURM_NNODES
    env["VENV"] = ""  # use PATH as is
    [line] = render(SLURM_DIR / "train_multi_node.sbatch", env)
    config_dir, config_name, overrides = parse_srun(line)
    assert (config_dir, config_name) == (str(tmp_path), "other")
    assert "distributed_training.distributed_port=29500" in overrides
    assert "distributed_training.distributed_world_size=16" in overrides
    env["PORT"] = "12345"  # PORT wins over MASTER_PORT
    assert "distributed_training.distributed_port=12345" in render(SLURM_DIR / "train_multi_node.sbatch", env)[0]


def test_spooled_copy_uses_the_submit_dir(tmp_path):
    """sbatch runs a copy of the script from its spool directory; the repository
    defaults then come from SLURM_SUBMIT_DIR."""
    submit_dir = tmp_path / "checkout"
    (submit_dir / "configs").mkdir(parents=True)
    (submit_dir / ".venv" / "bin").mkdir(parents=True)
    (submit_dir / ".venv" / "bin" / "activate").touch()
    spooled = tmp_path / "spool" / "job123456" / "slurm_script"
    spooled.parent.mkdir(parents=True)
    shutil.copy(SLURM_DIR / "train_single_node.sbatch", spooled)
    env = fake_job(1, "", SLURM_SUBMIT_DIR=str(submit_dir))
    del env["VENV"]
    source, srun = render(spooled, env)
    assert source == f"source {submit_dir}/.venv/bin/activate"
    assert parse_srun(srun)[0] == str(submit_dir / "configs")


def test_refuses_a_task_count_that_differs_from_the_gpus(venv):
    env = fake_job(2, venv, SLURM_GPUS_PER_NODE="4")
    proc = subprocess.run(["bash", str(SLURM_DIR / "train_multi_node.sbatch")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "one task per GPU" in proc.stderr and not proc.stdout


def test_scripts_share_their_launch_logic():
    """Each script must stand alone (sbatch spools a copy), so the body is duplicated;
    only the header may differ."""
    bodies = [(SLURM_DIR / s).read_text().split("\nset -euo pipefail\n", 1)[1] for s in SCRIPTS]
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("procid", [0, 11, 15])
def test_fairseq_slurm_init_agrees(procid, venv, monkeypatch):
    """Run fairseq's infer_init_method as srun's task ``procid`` of the 2 × 8 job
    would, on the config built from the script's own command line."""
    [_, srun] = render(SLURM_DIR / "train_multi_node.sbatch", fake_job(2, venv))
    cfg = check_fairseq_accepts(parse_srun(srun)[2]).distributed_training
    local_id = procid % GPUS
    for name in ["MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"SLURM_STEP_NODELIST": NODELIST, "SLURM_JOB_NODELIST": NODELIST,
                        "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": str(GPUS),
                        "SLURM_NTASKS": str(2 * GPUS), "SLURM_PROCID": str(procid),
                        "SLURM_LOCALID": str(local_id), "SLURM_NODEID": str(procid // GPUS)}.items():
        monkeypatch.setenv(name, value)

    def scontrol(argv, *args, **kwargs):  # no SLURM here: expand the node list ourselves
        assert argv == ["scontrol", "show", "hostnames", NODELIST]
        return "\n".join(HOSTS).encode() + b"\n"

    devices = []  # no GPUs here either: record which one the task would pick
    monkeypatch.setattr(subprocess, "check_output", scontrol)
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)

    distributed_utils.infer_init_method(cfg)

    assert cfg.distributed_init_method == f"tcp://{HOSTS[0]}:{PORT}"
    assert cfg.distributed_world_size == 2 * GPUS
    assert cfg.distributed_rank == procid
    assert cfg.device_id == local_id
    assert cfg.distributed_no_spawn  # one process per task, none spawned
    assert devices == ([local_id] if local_id else [])
