"""``ofasys-train-cpu --nprocs N ARGS...``: ``fairseq-train ARGS`` as N data-parallel
processes on CPU, talking over gloo.

fairseq's launchers assume GPUs: ``--distributed-world-size 2 --cpu`` asserts that
two GPUs exist, and its ``torchrun`` path divides the rank by the GPU count. Given
an explicit init method, though, fairseq initialises any backend; so this launcher
picks a free local port, spawns the processes itself and enters fairseq's own
``distributed_main`` in each (rank = process index). ``legacy_ddp`` is required:
fairseq hands PyTorch's DDP ``device_ids``, which DDP refuses for CPU modules.
"""
import argparse
import logging
import socket
import sys
from typing import List, Optional

import torch

from .cli import _console_argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(index: int, cfg, threads: int) -> None:
    from fairseq.distributed.utils import distributed_main
    from fairseq_cli.train import main as train_main

    # fairseq-train's log format (its basicConfig ran too late in this child process)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", level=logging.INFO, stream=sys.stdout,
                        force=True)
    torch.set_num_threads(threads)  # N processes share the cores
    distributed_main(index, train_main, cfg, {"start_rank": 0})


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--nprocs", type=int, default=2, help="number of processes (ranks)")
    parser.add_argument("--threads-per-process", type=int, default=None,
                        help="torch threads per process (default: cores / nprocs)")
    launcher, train_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if launcher.nprocs < 1:
        sys.exit("ofasys-train-cpu: --nprocs must be at least 1")
    if any(a.startswith("--ddp-backend") for a in train_args):
        sys.exit("ofasys-train-cpu sets --ddp-backend legacy_ddp itself, the one backend that "
                 "works on CPU: leave the option out")
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    # fairseq reads --user-dir from sys.argv while it builds its parser
    sys.argv = [sys.argv[0]] + _console_argv(train_args) + [
        "--cpu", "--distributed-world-size", str(launcher.nprocs),
        "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
        "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser()))
    cfg.distributed_training.distributed_rank = None  # distributed_main: rank = process index
    threads = launcher.threads_per_process or max(1, torch.get_num_threads() // launcher.nprocs)
    torch.multiprocessing.spawn(_process, args=(cfg, threads), nprocs=launcher.nprocs, join=True)


if __name__ == "__main__":
    main()
