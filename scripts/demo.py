"""The main job on bundled data: generate the demo tasks, train each with
``fairseq-train``, decode with ``fairseq-generate`` and with ``OFASys.inference``,
and print a table of metrics plus a few predictions.

    python scripts/demo.py [--out demo_run] [--tasks nli translation]

Everything a run writes (data, checkpoints, logs, generate output) is under ``--out``.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import demo_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "ofasys_fairseq")
COMMON_TRAIN_ARGS = [
    "--task", "instruction", "--user-dir", USER_DIR, "--arch", "ofasys_tiny",
    "--criterion", "instruction_ce", "--optimizer", "adam", "--lr-scheduler", "inverse_sqrt",
    "--cpu", "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "simple",
    "--log-interval", "50", "--seed", "1",
]
SCORERS = {"accuracy": "exact_match", "bleu": "sacrebleu"}  # fairseq-generate --scoring


@dataclass
class DemoTask:
    """One demo task: how its data is made and how its model is trained."""
    name: str
    metric: str  # "accuracy" (closed set) or "bleu" (free text)
    train_args: Sequence[str]
    train_rows: int = 3000
    valid_rows: int = 300

    @property
    def instruction(self) -> str:
        return demo_data.TASKS[self.name][1]


DEMO_TASKS = {
    "nli": DemoTask("nli", "accuracy", [
        "--embed-dim", "128", "--ffn-embed-dim", "256", "--attention-heads", "4",
        "--encoder-layers", "2", "--decoder-layers", "2", "--dropout", "0.1",
        "--lr", "0.001", "--warmup-updates", "100", "--batch-size", "32",
        "--vocab-size", "200", "--max-epoch", "3"]),
    "translation": DemoTask("translation", "bleu", [
        "--embed-dim", "128", "--ffn-embed-dim", "256", "--attention-heads", "4",
        "--encoder-layers", "2", "--decoder-layers", "2", "--dropout", "0.0",
        "--lr", "0.002", "--warmup-updates", "100", "--batch-size", "32",
        "--vocab-size", "200", "--max-epoch", "6"]),
}


def run_tool(tool: str, args: Sequence[str], log_path: str, echo=lambda line: False) -> str:
    """Run ``fairseq_cli.<tool>``, tee its output to ``log_path``, echo chosen lines."""
    command = [sys.executable, "-m", f"fairseq_cli.{tool}", *args]
    lines: List[str] = []
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if echo(line):
                print("   ", line.rstrip().split(" | ", 2)[-1], flush=True)
    if proc.returncode != 0:
        sys.exit(f"{tool} failed (exit {proc.returncode}); see {log_path}:\n"
                 + "".join(lines[-30:]))
    return "".join(lines)


def is_progress_line(line: str) -> bool:
    return "| INFO | train |" in line or "valid on 'valid' subset" in line


def best_validation(log: str, metric: str) -> float:
    values = [float(v) for v in re.findall(rf"valid on 'valid' subset .*?\| {metric} ([\d.]+)",
                                           log)]
    return max(values) if values else float("nan")


def generate_results(output: str, metric: str) -> Tuple[float, Dict[int, str]]:
    """fairseq-generate's score line (``--scoring exact_match`` or ``sacrebleu``) and its
    detokenized hypotheses by sample id."""
    pattern = r"exact_match = ([\d.]+)" if metric == "accuracy" else r"BLEU = ([\d.]+)"
    hypotheses = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", output, re.M)}
    return float(re.search(pattern, output).group(1)), hypotheses


def run_task(task: DemoTask, out_dir: str) -> Dict[str, object]:
    print(f"\n== {task.name}: {task.instruction}", flush=True)
    data_dir = demo_data.write_task(os.path.join(out_dir, "data"), task.name,
                                    task.train_rows, task.valid_rows, seed=1)
    work_dir = os.path.join(out_dir, task.name)
    shutil.rmtree(work_dir, ignore_errors=True)  # train from scratch, never resume
    os.makedirs(work_dir)
    save_dir = os.path.join(work_dir, "checkpoints")
    start = time.time()
    train_log = run_tool("train", [
        data_dir, "--instruction", task.instruction, *COMMON_TRAIN_ARGS, *task.train_args,
        "--save-dir", save_dir, "--best-checkpoint-metric", task.metric,
        "--maximize-best-checkpoint-metric"], os.path.join(work_dir, "train.log"),
        echo=is_progress_line)
    train_seconds = time.time() - start

    checkpoint = os.path.join(save_dir, "checkpoint_best.pt")
    generate_log = run_tool("generate", [
        data_dir, "--user-dir", USER_DIR, "--task", "instruction", "--path", checkpoint,
        "--gen-subset", "valid", "--beam", "5", "--batch-size", "64", "--cpu",
        "--post-process", "sentencepiece", "--scoring", SCORERS[task.metric]],
        os.path.join(work_dir, "generate.log"))
    generate_score, generated = generate_results(generate_log, task.metric)

    from ofasys_fairseq import OFASys  # imported late: fairseq start-up is slow

    with open(os.path.join(data_dir, "valid.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(5), f)]
    model = OFASys.from_pretrained(checkpoint)
    target = model.task.plan.target.column
    inputs = [{k: v for k, v in row.items() if k != target} for row in rows]
    predictions = [p[target] for p in model.inference(data=inputs, beam=5)]
    return {
        "task": task.name, "metric": task.metric,
        "validation": best_validation(train_log, task.metric),
        "generate": generate_score, "train_seconds": train_seconds,
        "examples": [(row, target, prediction, generated[i])
                     for i, (row, prediction) in enumerate(zip(rows, predictions))],
    }


def print_report(results: List[Dict[str, object]]) -> None:
    print("\n" + "=" * 78)
    print(f"{'task':<12} {'metric':<9} {'valid (train)':>14} {'fairseq-generate':>17} "
          f"{'train time':>11}")
    for r in results:
        print(f"{r['task']:<12} {r['metric']:<9} {r['validation']:>14.2f} "
              f"{r['generate']:>17.2f} {r['train_seconds']:>10.0f}s")
    for r in results:
        print(f"\n{r['task']}: OFASys.inference on the first validation rows")
        for row, target, prediction, generated in r["examples"]:
            inputs = "  ".join(f"{k}={v!r}" for k, v in row.items() if k != target)
            mark = "ok" if prediction == row[target] else "WRONG"
            generate = "agrees" if generated == prediction else f"says {generated!r}"
            print(f"  {inputs}\n    -> {prediction!r} (reference {row[target]!r}, {mark}; "
                  f"fairseq-generate {generate})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_run"))
    parser.add_argument("--tasks", nargs="+", choices=sorted(DEMO_TASKS),
                        default=list(DEMO_TASKS))
    args = parser.parse_args()
    start = time.time()
    results = [run_task(DEMO_TASKS[name], args.out) for name in args.tasks]
    print_report(results)
    print(f"\ndemo finished in {time.time() - start:.0f}s; outputs under {args.out}")


if __name__ == "__main__":
    main()
