"""Opening a large training file, with and without the index cache, in the same run:

* **scan** -- ``--no-data-cache``: every row parsed, checked and sized at every start
  (what every start did before the cache);
* **first build** -- the cache is empty: the same scan, its arrays written to
  ``.ofasys-cache/`` and mapped back; in one process, then with ``--scan-workers``'
  default (one process per core);
* **cached** -- a later start: the arrays memory-mapped, no row read.

Each start is a fresh process that takes the vocabulary as a resumed run does (from a
saved task state), then times ``load_dataset("train")`` and fairseq's batch iterator up to
the first batch under ``--max-tokens``: the data side of a start. It reports the
seconds, microseconds a row, the bytes a row of the row index and sizes arrays, and how
much the process's resident memory grew. The data: generated caption-like rows (a short
prompt and a caption of 6-14 pseudo-words, ~90 bytes a row), instruction
``[TEXT:prompt] -> [TEXT:caption]``.

    python -m benchmarks --only data_loading [--quick]
    python -m benchmarks.data_loading [--quick] [--rows 10000,100000,1000000] [--ten-million]
"""
import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, TextIO

INSTRUCTION = "[TEXT:prompt] -> [TEXT:caption]"
# (name, index cache on, scan processes; 0: the default, one per core)
MODES = (("scan", False, 1), ("first build, 1 process", True, 1), ("first build", True, 0),
         ("cached", True, 0))
WORDS = [a + b for a in ("ka", "lo", "mi", "su", "te", "ra", "no", "vi") for b in
         ("ba", "do", "fe", "gu", "ri", "so", "tan", "wel")]


@dataclass(frozen=True)
class Settings:
    rows: Sequence[int] = (10_000, 100_000, 1_000_000)
    max_tokens: int = 4096
    vocab_size: int = 2000


QUICK = Settings(rows=(2_000,), vocab_size=200)


class BenchmarkError(RuntimeError):
    pass


def write_rows(path: str, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for index in range(count):
            caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
            f.write(json.dumps({"id": index, "prompt": "what does the scene show ?",
                                "caption": caption}) + "\n")


def task_config(data_dir: str, vocab_size: int, cached: bool, scan_workers: int = 0):
    from ofasys_fairseq.tasks.instruction_task import InstructionConfig
    return InstructionConfig(data=data_dir, instruction=INSTRUCTION, vocab_size=vocab_size,
                             num_bins=8, seed=1, train_subset="train", no_data_cache=not cached,
                             scan_workers=scan_workers,
                             save_dir=os.path.join(data_dir, "no-checkpoints"),
                             restore_file="checkpoint_last.pt", no_eval_metrics=True)


def save_task_state(data_dir: str, vocab_size: int, path: str) -> None:
    """The vocabulary a run trains on this data, saved as a checkpoint keeps it."""
    import torch

    from ofasys_fairseq.tasks.instruction_task import InstructionTask
    task = InstructionTask.setup_task(task_config(data_dir, vocab_size, cached=False))
    task.prepare()
    torch.save(task.state_dict(), path)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_start(data_dir: str, state_path: str, vocab_size: int, cached: bool,
                  scan_workers: int, max_tokens: int) -> Dict[str, float]:
    """One start's data side, in this process (``--measure``)."""
    import torch

    from ofasys_fairseq.tasks.instruction_task import InstructionTask
    task = InstructionTask.setup_task(task_config(data_dir, vocab_size, cached, scan_workers))
    task.load_state_dict(torch.load(state_path))
    before, start = resident_bytes(), time.perf_counter()
    task.load_dataset("train")
    dataset = task.datasets["train"]
    batches = task.get_batch_iterator(dataset, max_tokens=max_tokens, seed=1,
                                      num_workers=0).next_epoch_itr(shuffle=True)
    next(batches)
    seconds = time.perf_counter() - start
    arrays = (dataset.tables[0]._offsets, dataset.tables[0]._lines, dataset.rows, dataset.src_sizes,
              dataset.tgt_sizes, dataset.feature_sizes)
    return {"seconds": seconds, "rows": len(dataset),
            "index_bytes": sum(a.nbytes for a in arrays),
            "rss_growth": resident_bytes() - before}


def start_in_a_fresh_process(data_dir: str, state_path: str, settings: Settings,
                             cached: bool, scan_workers: int) -> Dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_loading", "--measure", data_dir, state_path,
         str(settings.vocab_size), str(int(cached)), str(scan_workers),
         str(settings.max_tokens)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise BenchmarkError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(settings: Settings, out: TextIO = sys.stdout,
        fresh_processes: bool = True) -> List[Dict[str, float]]:
    """The table; ``fresh_processes=False`` measures in this process (a smoke test: its
    memory numbers then include what earlier starts left)."""
    results = []
    print(f"{'rows':>10} {'mode':>23} {'seconds':>8} {'us/row':>7} {'x scan':>7} "
          f"{'B/row':>6} {'RSS MB':>7}", file=out, flush=True)
    for count in settings.rows:
        with tempfile.TemporaryDirectory(prefix="ofasys-data-loading-") as root:
            data_dir = os.path.join(root, "data")
            os.makedirs(data_dir)
            write_rows(os.path.join(data_dir, "train.jsonl"), count)
            state_path = os.path.join(root, "task_state.pt")
            save_task_state(data_dir, settings.vocab_size, state_path)
            row = {"rows": count}
            for mode, cached, workers in MODES:
                if mode.startswith("first build"):  # each build starts from an empty cache
                    shutil.rmtree(os.path.join(data_dir, ".ofasys-cache"), ignore_errors=True)
                measured = (start_in_a_fresh_process(data_dir, state_path, settings, cached,
                                                     workers)
                            if fresh_processes else
                            measure_start(data_dir, state_path, settings.vocab_size, cached,
                                          workers, settings.max_tokens))
                if measured["rows"] != count:
                    raise BenchmarkError(f"{mode}: {measured['rows']} rows of {count}")
                row[mode] = measured
                print(f"{count:>10} {mode:>23} {measured['seconds']:>8.2f} "
                      f"{1e6 * measured['seconds'] / count:>7.1f} "
                      f"{measured['seconds'] / row['scan']['seconds']:>7.2f} "
                      f"{measured['index_bytes'] / count:>6.1f} "
                      f"{measured['rss_growth'] / 2 ** 20:>7.1f}", file=out, flush=True)
            results.append(row)
    largest = results[-1]
    print(f"\nat {largest['rows']:,} rows: a cached start takes "
          f"{largest['cached']['seconds']:.2f} s (target: under 5 s at 1,000,000), the first "
          f"build {largest['first build']['seconds'] / largest['scan']['seconds']:.2f}x the "
          f"one-process scan's time (target: no slower; "
          f"{largest['first build, 1 process']['seconds'] / largest['scan']['seconds']:.2f}x "
          f"in one process), index and sizes "
          f"{largest['cached']['index_bytes'] / largest['rows']:.1f} bytes a row (target: "
          f"under 32)", file=out)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_loading",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--rows", help="comma-separated row counts (default 10k, 100k, 1M)")
    parser.add_argument("--ten-million", action="store_true", help="add 10,000,000 rows")
    parser.add_argument("--measure", nargs=6, help=argparse.SUPPRESS)  # one start, internal
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # before fairseq's import sets DEBUG
    if args.measure:
        data_dir, state, vocab_size, cached, workers, max_tokens = args.measure
        print(json.dumps(measure_start(data_dir, state, int(vocab_size), cached == "1",
                                       int(workers), int(max_tokens))))
        return 0
    settings = QUICK if args.quick else Settings()
    if args.rows:
        settings = replace(settings, rows=tuple(int(r) for r in args.rows.split(",")))
    if args.ten_million:
        settings = replace(settings, rows=(*settings.rows, 10_000_000))
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
