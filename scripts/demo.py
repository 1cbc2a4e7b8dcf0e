"""The main job on bundled data: generate the demo tasks, train each with
``fairseq-train``, decode with ``fairseq-generate`` and with ``OFASys.inference``,
and print a table of metrics plus a few predictions.

    python scripts/demo.py [--out demo_run] [--tasks nli translation]

Everything a run writes (data, checkpoints, logs, generate output) is under ``--out``.
"""
import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import demo_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "ofasys_fairseq")
COMMON_TRAIN_ARGS = [
    "--task", "instruction", "--user-dir", USER_DIR, "--arch", "ofasys_tiny",
    "--criterion", "instruction_ce", "--optimizer", "adam", "--lr-scheduler", "inverse_sqrt",
    "--cpu", "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "simple",
    "--log-interval", "50", "--seed", "1",
]
# metric -> (fairseq-generate --scoring, the score in its result line)
SCORERS = {
    "accuracy": ("exact_match", r"exact_match = ([\d.]+)"),
    "bleu": ("sacrebleu", r"BLEU = ([\d.]+)"),
    "cider": ("cider", r"CIDEr-D = ([\d.]+)"),
    "box_acc": ("box_acc", r"Acc@IoU>=0.5 = ([\d.]+)"),
}
TINY = ["--embed-dim", "128", "--ffn-embed-dim", "256", "--attention-heads", "4",
        "--encoder-layers", "2", "--decoder-layers", "2", "--vocab-size", "200",
        "--batch-size", "32", "--warmup-updates", "100"]
# 64x64 scenes in 8x8 ViT patches (a ResNet costs several times more on CPU); 16 location
# bins of 4 pixels: tiny models learn fewer bins faster, at little cost in IoU
SHAPES_IMAGES = ["--image-size", "64", "--image-adaptor", "vit", "--vit-patch-size", "8",
                 "--num-bins", "16"]


@dataclass
class DemoTask:
    """One demo task: its data, instruction, metric and training recipe."""
    name: str
    instruction: str
    metric: str  # a key of SCORERS (the validation metric of the same name)
    write_data: Callable[[str], str]  # output directory -> the task's data directory
    train_args: Sequence[str]


@functools.lru_cache(maxsize=None)
def shapes_data(out_dir: str) -> str:
    return demo_data.write_shapes(out_dir)  # one table, read by four instructions


def text_data(name: str) -> Callable[[str], str]:
    return lambda out_dir: demo_data.write_task(out_dir, name, 3000, 300, seed=1)


DEMO_TASKS = {task.name: task for task in [
    DemoTask("nli", demo_data.NLI_INSTRUCTION, "accuracy", text_data("nli"),
             [*TINY, "--dropout", "0.1", "--lr", "0.001", "--max-epoch", "3"]),
    DemoTask("translation", demo_data.TRANSLATION_INSTRUCTION, "bleu", text_data("translation"),
             [*TINY, "--dropout", "0.0", "--lr", "0.002", "--max-epoch", "6"]),
    # 8x8 handwritten digits, upscaled to 32x32 and cut into 8x8 ViT patches
    DemoTask("digits", demo_data.DIGITS_INSTRUCTION, "accuracy", demo_data.write_digits,
             [*TINY, "--image-size", "32", "--image-adaptor", "vit", "--vit-patch-size", "8",
              "--dropout", "0.1", "--lr", "0.002", "--max-epoch", "6"]),
    DemoTask("shapes_caption", demo_data.SHAPES_CAPTION_INSTRUCTION, "cider", shapes_data,
             [*TINY, *SHAPES_IMAGES, "--dropout", "0.0", "--lr", "0.002", "--max-epoch", "4"]),
    DemoTask("shapes_vqa", demo_data.SHAPES_VQA_INSTRUCTION, "accuracy", shapes_data,
             [*TINY, *SHAPES_IMAGES, "--dropout", "0.0", "--lr", "0.004", "--max-epoch", "8"]),
    DemoTask("shapes_grounding", demo_data.SHAPES_GROUNDING_INSTRUCTION, "box_acc", shapes_data,
             [*TINY, *SHAPES_IMAGES, "--dropout", "0.0", "--lr", "0.004", "--max-epoch", "10"]),
    DemoTask("shapes_region_caption", demo_data.SHAPES_GROUNDED_CAPTION_INSTRUCTION, "cider",
             shapes_data, [*TINY, *SHAPES_IMAGES, "--dropout", "0.0", "--lr", "0.002",
                           "--max-epoch", "4"]),
]}


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
    """fairseq-generate's score line and its detokenized hypotheses by sample id."""
    hypotheses = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", output, re.M)}
    return float(re.search(SCORERS[metric][1], output).group(1)), hypotheses


def run_task(task: DemoTask, out_dir: str) -> Dict[str, object]:
    print(f"\n== {task.name}: {task.instruction}", flush=True)
    data_dir = task.write_data(os.path.join(out_dir, "data"))
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
        "--post-process", "sentencepiece", "--scoring", SCORERS[task.metric][0]],
        os.path.join(work_dir, "generate.log"))
    generate_score, generated = generate_results(generate_log, task.metric)

    from ofasys_fairseq import OFASys  # imported late: fairseq start-up is slow
    from ofasys_fairseq.data.table import Table, find_split_file

    table = Table(find_split_file(data_dir, "valid"))
    rows = [table[i] for i in range(5)]
    model = OFASys.from_pretrained(checkpoint)
    plan = model.task.plan
    target = plan.target.column
    image_columns = [s.column for s in plan.templates[0].image_slots]
    inputs = [{k: os.path.join(data_dir, v) if k in image_columns else v
               for k, v in row.items() if k != target} for row in rows]
    predictions = [p[target] for p in model.inference(data=inputs, beam=5)]
    examples = [(row, target, prediction, generated[i])
                for i, (row, prediction) in enumerate(zip(rows, predictions))]
    pictures = [draw_boxes(data_dir, row, image_columns[0], prediction, plan,
                           os.path.join(work_dir, "predictions", f"valid_{i}.png"))
                for i, (row, prediction) in enumerate(zip(rows, predictions))
                if any(s.modality == "BOX" for s in plan.templates[0].slots)]
    return {
        "task": task.name, "metric": task.metric,
        "validation": best_validation(train_log, task.metric),
        "generate": generate_score, "train_seconds": train_seconds,
        "examples": examples, "pictures": pictures,
    }


def draw_boxes(data_dir: str, row: Dict[str, object], image_column: str, prediction,
               plan, path: str, scale: int = 4) -> str:
    """The row's image, enlarged, with its boxes in black and a predicted box in magenta."""
    from PIL import Image, ImageDraw

    from ofasys_fairseq.data.box import parse_box

    image = Image.open(os.path.join(data_dir, row[image_column])).convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    for slot in plan.templates[0].slots:
        if slot.modality == "BOX":
            draw.rectangle([c * scale for c in parse_box(row[slot.column])], outline="black",
                           width=2)
    if plan.target.modality == "BOX" and prediction is not None:
        draw.rectangle([c * scale for c in prediction], outline="magenta", width=2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)
    return path


def is_correct(prediction, reference) -> bool:
    if isinstance(prediction, list):  # a box: right when IoU >= 0.5, as Acc@0.5
        import torch

        from ofasys_fairseq.data.box import parse_box
        from ofasys_fairseq.scoring.box_accuracy import box_accuracy

        return box_accuracy(torch.tensor([prediction]),
                            torch.tensor([parse_box(reference)]))[0] == 1
    return prediction == reference


def shown(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{c:.1f}" for c in value) + "]"
    return repr(value)


def print_report(results: List[Dict[str, object]]) -> None:
    print("\n" + "=" * 78)
    print(f"{'task':<22} {'metric':<9} {'valid (train)':>14} {'fairseq-generate':>17} "
          f"{'train time':>11}")
    for r in results:
        print(f"{r['task']:<22} {r['metric']:<9} {r['validation']:>14.2f} "
              f"{r['generate']:>17.2f} {r['train_seconds']:>10.0f}s")
    for r in results:
        print(f"\n{r['task']}: OFASys.inference on the first validation rows")
        for row, target, prediction, generated in r["examples"]:
            inputs = "  ".join(f"{k}={v!r}" for k, v in row.items() if k != target)
            mark = "ok" if is_correct(prediction, row[target]) else "WRONG"
            print(f"  {inputs}\n    -> {shown(prediction)} (reference {row[target]!r}, {mark}; "
                  f"fairseq-generate: {generated!r})")
        for path in r["pictures"]:
            print(f"  boxes drawn (black: data, magenta: predicted): {path}")


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
