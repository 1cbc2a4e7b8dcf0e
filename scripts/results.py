"""The generalist against its specialists over several seeds (``make results``): for each
seed, ``scripts/demo.py --specialists`` without the decoding (the demo's generalist on every
task, then each task alone for as many batches as the generalist gave it), then per task
the mean and spread of both over the seeds and each seed's generalist / specialist ratio.
Each model is its best checkpoint on the validation split, scored on the test split (rows
no checkpoint was chosen on: a specialist's best of ten noisy validations is not its
quality).

    python scripts/results.py [--seeds 1 2 3] [--out results_run] [HYDRA_OVERRIDE ...]

Each seed's numbers are written to ``OUT/seed_S/results.json`` as soon as it ends; a seed
whose file is there is read back, not trained again (an interrupted run continues). The
table goes to the console and to ``OUT/results.md``.
"""
import argparse
import json
import math
import os
import statistics
import time
from typing import Dict, List

import demo

# the OFASys paper's claim: a generalist keeps about 95% of its specialists' quality
KEPT_QUALITY = 0.95


def measure_seed(out_dir: str, seed: int, tasks: Dict[str, dict],
                 data_dirs: Dict[str, str]) -> Dict[str, Dict[str, float]]:
    """One seed's generalist and specialists; task -> {batches, generalist, specialist,
    ratio} on the test split, and both models' best validation (the generalist's at its
    best-score checkpoint)."""
    path = os.path.join(out_dir, f"seed_{seed}", "results.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    seed_dir = os.path.dirname(path)
    demo.EXTRA_OVERRIDES.append(f"common.seed={seed}")
    try:
        print(f"\n== seed {seed}: the generalist on {len(tasks)} tasks", flush=True)
        log = demo.hydra_train(demo.data_overrides(data_dirs),
                               os.path.join(seed_dir, "generalist"))
        best = demo.best_validation(log)
        batches = demo.trained_batches(log, tasks, demo.config_batch_size())
        specialists = demo.train_specialists(seed_dir, tasks, data_dirs, batches)
    finally:
        demo.EXTRA_OVERRIDES.pop()
    print(f"\n== seed {seed}: the test splits", flush=True)
    generalist = test_results(os.path.join(seed_dir, "generalist"))
    measured = {}
    for name, spec in tasks.items():
        key = f"{name}_{spec['metrics'][0]}"
        specialist = test_results(os.path.join(seed_dir, "specialists", name))[key]
        measured[name] = {
            "metric": spec["metrics"][0], "batches": batches[name],
            "generalist": generalist[key], "specialist": specialist,
            "ratio": demo.quality_ratio(spec["metrics"][0], generalist[key], specialist),
            "generalist_valid": best.get(key, math.nan), "specialist_valid": specialists[name]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(measured, f, indent=1)
    return measured


def test_results(run_dir: str) -> Dict[str, float]:
    """The metrics of a run's best checkpoint on the test splits."""
    return demo.test_results(os.path.join(run_dir, "checkpoints", "checkpoint_best.pt"),
                             os.path.join(run_dir, "test.log"))


def spread(values: List[float]) -> str:
    """``mean ± sample standard deviation (min-max)``."""
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{statistics.mean(values):.1f} ± {deviation:.1f} "
            f"({min(values):.1f}-{max(values):.1f})")


def summary_table(seeds: List[int], runs: List[Dict[str, Dict[str, float]]]) -> List[str]:
    """Markdown lines: per task the generalist's and specialists' mean and spread, each
    seed's ratio and whether every seed keeps KEPT_QUALITY."""
    lines = ["| task | metric | generalist | specialist | "
             + " | ".join(f"ratio seed {s}" for s in seeds) + f" | >= {KEPT_QUALITY} |",
             "|---|---|---:|---:|" + "---:|" * len(seeds) + ":---:|"]
    for name, first in runs[0].items():
        ratios = [run[name]["ratio"] for run in runs]
        kept = all(r >= KEPT_QUALITY for r in ratios)
        lines.append(
            f"| {name} | {first['metric']} | {spread([r[name]['generalist'] for r in runs])} | "
            f"{spread([r[name]['specialist'] for r in runs])} | "
            + " | ".join(f"{r:.2f}" for r in ratios) + f" | {'yes' if kept else 'no'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default=os.path.join(demo.ROOT, "results_run"))
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for every training run")
    args = parser.parse_args()
    out_dir = os.path.abspath(args.out)
    demo.EXTRA_OVERRIDES.extend(args.overrides)
    start = time.time()
    tasks = demo.demo_tasks()
    data_dirs = demo.write_data(out_dir, tasks)
    runs = [measure_seed(out_dir, seed, tasks, data_dirs) for seed in args.seeds]
    lines = [f"Generalist / specialist over seeds {', '.join(map(str, args.seeds))} "
             f"(configs/{demo.CONFIG_NAME}.yaml; test splits, each model at its best "
             "validation checkpoint; mean ± standard deviation (min-max) over the seeds):", "",
             *summary_table(args.seeds, runs)]
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    print(f"\nresults finished in {time.time() - start:.0f}s; table in "
          f"{os.path.join(out_dir, 'results.md')}")


if __name__ == "__main__":
    main()
