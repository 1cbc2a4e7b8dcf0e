"""The main job on bundled data: one generalist trained on every demo task at once
(``configs/multitask_demo.yaml`` through ``fairseq-hydra-train``), then decoded per task
with ``fairseq-generate`` and ``OFASys.inference``, and a table of per-task metrics.

    python scripts/demo.py [--out demo_run] [HYDRA_OVERRIDE ...]   (e.g. optimization.max_update=500)
    python scripts/demo.py --specialists   # also one specialist per task, trained on as
                                           # many batches as the generalist gave that task,
                                           # and the generalist / specialist ratios

Everything a run writes (data, checkpoints, logs, generate output) is under ``--out``.
"""
import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

import demo_data
import demo_tables
from omegaconf import OmegaConf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "ofasys_fairseq")
CONFIG_DIR, CONFIG_NAME = os.path.join(ROOT, "configs"), "multitask_demo"
# metric -> (fairseq-generate --scoring, the score in its result line)
SCORERS = {
    "accuracy": ("exact_match", r"exact_match = ([\d.]+)"),
    "bleu": ("sacrebleu", r"BLEU = ([\d.]+)"),
    "cider": ("cider", r"CIDEr-D = ([\d.]+)"),
    "box_acc": ("box_acc", r"Acc@IoU>=0.5 = ([\d.]+)"),
    "exact_match": ("exact_match", r"exact_match = ([\d.]+)"),
    "cell_accuracy": ("cell_accuracy", r"cell_accuracy = ([\d.]+)"),
}
EXTRA_OVERRIDES: List[str] = []  # from the command line, for every training run
# the demo config's data directories (by name) and how to write them
DATA_WRITERS = {
    "nli": lambda out: demo_data.write_task(out, "nli", 3000, 300, seed=1),
    "translation": lambda out: demo_data.write_task(out, "translation", 3000, 300, seed=1),
    "digits": demo_data.write_digits,
    "shapes": demo_data.write_shapes,
    **{name: (lambda out, name=name: demo_tables.write_table_task(out, name))
       for name in demo_tables.TABLE_TASKS},
}


def demo_tasks() -> Dict[str, dict]:
    """name -> {instruction, data, metrics} of the demo config."""
    config = OmegaConf.load(os.path.join(CONFIG_DIR, CONFIG_NAME + ".yaml"))
    return OmegaConf.to_container(config.task.tasks)


def write_data(out_dir: str, tasks: Dict[str, dict]) -> Dict[str, str]:
    """Write each data directory the tasks read once; name -> the task's data directory."""
    written = {}
    for spec in tasks.values():
        name = os.path.basename(spec["data"])
        if name not in written:
            written[name] = DATA_WRITERS[name](os.path.join(out_dir, "data"))
    return {task: written[os.path.basename(spec["data"])] for task, spec in tasks.items()}


def run_tool(tool: str, args: Sequence[str], log_path: str, echo=lambda line: False,
             cwd: str = None) -> str:
    """Run ``fairseq_cli.<tool>``, tee its output to ``log_path``, echo chosen lines."""
    command = [sys.executable, "-m", f"fairseq_cli.{tool}", *args]
    lines: List[str] = []
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=cwd) as proc:
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
    return "[train]" in line or "valid on 'valid' subset" in line


def log_fields(line: str) -> Dict[str, float]:
    """``key value | key value`` pairs of a fairseq log line, the numeric ones."""
    return {k: float(v) for k, v in re.findall(r"(\w+) (-?[\d.]+)(?= \||$)", line)}


def validations(log: str) -> List[Dict[str, float]]:
    return [log_fields(line) for line in log.splitlines() if "valid on 'valid' subset" in line]


def trained_batches(log: str, names: Sequence[str], batch_size: int) -> Dict[str, int]:
    """Batches each task was trained on: its samples over all epochs / the batch size."""
    epochs = [log_fields(line) for line in log.splitlines() if "[train][INFO]" in line]
    return {name: math.ceil(sum(e.get(f"{name}_samples", 0) for e in epochs) / batch_size)
            for name in names}


def hydra_train(overrides: Sequence[str], work_dir: str, echo=is_progress_line) -> str:
    given = {o.split("=")[0] for o in overrides}  # a run's own settings win
    overrides = [*overrides, *(o for o in EXTRA_OVERRIDES if o.split("=")[0] not in given)]
    shutil.rmtree(work_dir, ignore_errors=True)  # train from scratch, never resume
    os.makedirs(work_dir)
    return run_tool("hydra_train", [
        "--config-dir", CONFIG_DIR, "--config-name", CONFIG_NAME, f"common.user_dir={USER_DIR}",
        f"checkpoint.save_dir={os.path.join(work_dir, 'checkpoints')}", *overrides],
        os.path.join(work_dir, "train.log"), echo,
        cwd=work_dir)  # Hydra writes .hydra/ and its log where it runs


def data_overrides(data_dirs: Dict[str, str]) -> List[str]:
    return [f"task.tasks.{name}.data={path}" for name, path in data_dirs.items()]


def generate_results(output: str, metric: str) -> Tuple[float, Dict[int, str]]:
    """fairseq-generate's score line and its detokenized hypotheses by sample id."""
    hypotheses = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", output, re.M)}
    return float(re.search(SCORERS[metric][1], output).group(1)), hypotheses


def evaluate_task(name: str, spec: dict, data_dir: str, checkpoint: str, work_dir: str,
                  model, best: Dict[str, float]) -> Dict[str, object]:
    """fairseq-generate (beam 5) on the task's validation rows, and OFASys.inference on the
    first three of them."""
    from ofasys_fairseq.data.table import Table, find_split_file

    metric = spec["metrics"][0]
    generate_log = run_tool("generate", [
        data_dir, "--user-dir", USER_DIR, "--task", "instruction", "--trained-task", name,
        "--path", checkpoint, "--gen-subset", "valid", "--beam", "5", "--batch-size", "64",
        "--cpu", "--post-process", "sentencepiece", "--scoring", SCORERS[metric][0]],
        os.path.join(work_dir, f"generate_{name}.log"))
    generate_score, generated = generate_results(generate_log, metric)

    table = Table(find_split_file(data_dir, "valid"))
    rows = [table[i] for i in range(3)]
    plan = model.task.member(name).plan
    target = plan.target.column
    image_columns = [s.column for s in plan.templates[0].feature_slots if s.modality == "IMAGE"]
    inputs = [{k: in_data_dir(data_dir, v) for k, v in row.items() if k != target}
              for row in rows]
    outputs = model.inference(data=inputs, beam=5, max_len=256, task=name)
    predictions = [output[target] for output in outputs]
    read = plan.bind_columns(table.columns).columns()
    examples = [({k: v for k, v in row.items() if k in read}, target, prediction, generated[i])
                for i, (row, prediction) in enumerate(zip(rows, predictions))]
    pictures = [draw_boxes(data_dir, row, image_columns[0], prediction, plan,
                           os.path.join(work_dir, "predictions", name, f"valid_{i}.png"))
                for i, (row, prediction) in enumerate(zip(rows, predictions))
                if any(s.modality == "BOX" for s in plan.templates[0].slots)]
    return {"task": name, "metric": metric, "validation": best.get(f"{name}_{metric}", math.nan),
            "generate": generate_score, "examples": examples, "pictures": pictures}


def in_data_dir(data_dir: str, value):
    """A cell naming a file of the data directory (an image, a table), as a path from here
    (``OFASys.inference`` reads relative paths from the current directory)."""
    if isinstance(value, str) and os.path.isfile(os.path.join(data_dir, value)):
        return os.path.join(data_dir, value)
    return value


def train_generalist(out_dir: str, tasks: Dict[str, dict],
                     data_dirs: Dict[str, str]) -> Tuple[str, List[Dict[str, object]]]:
    """Train the generalist; its log and the per-task results of its best checkpoint."""
    print(f"\n== one generalist on {len(tasks)} tasks: {', '.join(tasks)}", flush=True)
    work_dir = os.path.join(out_dir, "generalist")
    start = time.time()
    log = hydra_train(data_overrides(data_dirs), work_dir)
    print(f"   trained in {time.time() - start:.0f}s", flush=True)
    best = max(validations(log), key=lambda v: v.get("score", -math.inf))

    from ofasys_fairseq import OFASys  # imported late: fairseq start-up is slow

    checkpoint = os.path.join(work_dir, "checkpoints", "checkpoint_best.pt")
    model = OFASys.from_pretrained(checkpoint)
    results = [evaluate_task(name, spec, data_dirs[name], checkpoint, work_dir, model, best)
               for name, spec in tasks.items()]
    return log, results


def train_specialists(out_dir: str, tasks: Dict[str, dict], data_dirs: Dict[str, str],
                      batches: Dict[str, int]) -> Dict[str, float]:
    """Each task alone, same model and recipe, trained on as many batches as the generalist
    gave it; name -> best validation value of its first metric."""
    scores = {}
    for name, spec in tasks.items():
        print(f"\n== specialist {name}: {batches[name]} updates", flush=True)
        others = [f"~task.tasks.{other}" for other in tasks if other != name]
        log = hydra_train([*others, f"task.tasks.{name}.data={data_dirs[name]}",
                           f"optimization.max_update={batches[name]}"],
                          os.path.join(out_dir, "specialists", name))
        metric = f"{name}_{spec['metrics'][0]}"
        scores[name] = max(v.get(metric, -math.inf) for v in validations(log))
    return scores


def draw_boxes(data_dir: str, row: Dict[str, object], image_column: str, prediction,
               plan, path: str, scale: int = 4) -> str:
    """The row's image, enlarged, with its boxes in black and a predicted box in magenta."""
    from PIL import Image, ImageDraw

    from ofasys_fairseq.modalities.box import parse_box

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


def is_box(value) -> bool:
    return isinstance(value, list) and all(isinstance(c, float) for c in value)


def is_correct(prediction, reference) -> bool:
    if is_box(prediction):  # right when IoU >= 0.5, as Acc@0.5
        import torch

        from ofasys_fairseq.modalities.box import parse_box
        from ofasys_fairseq.modalities.box.accuracy import box_accuracy

        return box_accuracy(torch.tensor([prediction]),
                            torch.tensor([parse_box(reference)]))[0] == 1
    return prediction == reference


def shown(value) -> str:
    if is_box(value):
        return "[" + ", ".join(f"{c:.1f}" for c in value) + "]"
    return repr(value)


def print_report(results: List[Dict[str, object]]) -> None:
    print("\n" + "=" * 78)
    print("The generalist, task by task (validation rows):")
    print(f"{'task':<22} {'metric':<9} {'valid (train)':>14} {'fairseq-generate':>17}")
    for r in results:
        print(f"{r['task']:<22} {r['metric']:<9} {r['validation']:>14.2f} {r['generate']:>17.2f}")
    for r in results:
        print(f"\n{r['task']}: OFASys.inference(task={r['task']!r}) on the first validation rows")
        for row, target, prediction, generated in r["examples"]:
            inputs = "  ".join(f"{k}={v!r}" for k, v in row.items() if k != target)
            mark = "ok" if is_correct(prediction, row[target]) else "WRONG"
            print(f"  {inputs}\n    -> {shown(prediction)} (reference {row[target]!r}, {mark}; "
                  f"fairseq-generate: {generated!r})")
        for path in r["pictures"]:
            print(f"  boxes drawn (black: data, magenta: predicted): {path}")


def print_ratios(results: List[Dict[str, object]], batches: Dict[str, int],
                 specialists: Dict[str, float]) -> None:
    print("\n" + "=" * 78)
    print("Generalist / specialist, same model and recipe, same batches per task "
          "(best validation):")
    print(f"{'task':<22} {'metric':<9} {'batches':>8} {'generalist':>11} {'specialist':>11} "
          f"{'ratio':>7}")
    ratios = []
    for r in results:
        special = specialists[r["task"]]
        ratio = r["validation"] / special if special > 0 else math.nan
        ratios.append(ratio)
        print(f"{r['task']:<22} {r['metric']:<9} {batches[r['task']]:>8} "
              f"{r['validation']:>11.2f} {special:>11.2f} {ratio:>7.3f}")
    print(f"{'mean ratio':<52} {sum(ratios) / len(ratios):>22.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_run"))
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for every training run, e.g. model.embed_dim=64")
    parser.add_argument("--specialists", action="store_true",
                        help="also train one specialist per task with the generalist's budget "
                             "for that task, and print generalist / specialist ratios")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)  # training runs in its own directory
    EXTRA_OVERRIDES.extend(args.overrides)
    start = time.time()
    tasks = demo_tasks()
    data_dirs = write_data(args.out, tasks)
    log, results = train_generalist(args.out, tasks, data_dirs)
    print_report(results)
    if args.specialists:
        batch_size = OmegaConf.load(os.path.join(CONFIG_DIR, CONFIG_NAME + ".yaml")).dataset.batch_size
        batches = trained_batches(log, list(tasks), batch_size)
        print_ratios(results, batches, train_specialists(args.out, tasks, data_dirs, batches))
    print(f"\ndemo finished in {time.time() - start:.0f}s; outputs under {args.out}")


if __name__ == "__main__":
    main()
