"""Benchmark of the multitask engine (``--task multitask``), against baselines measured in
the same run:

1. **Padding efficiency** of one training epoch in each batch mode: over every batch of
   the epoch plan (fairseq's ``Trainer.get_train_iterator``, i.e. the task's
   ``get_batch_iterator`` and the dataset's own collater; a ``round`` sample counts each
   of its per-task samples), real positions / padded positions, on both sides:

   * encoder: real = non-pad text tokens + the image patches of the rows that have
     images; padded = rows x (widest text + image part), the image part being, per
     feature slot index, the widest image there, as ``UniversalEncoder`` pads it;
   * decoder: real = decoder positions (eos + forced prefix + target: ``no_loss``
     prefixes are computed too, so they count as real); padded = rows x widest.

   ``homogeneous`` (each batch from one task) is the baseline; ``mixed`` puts rows of
   text and vision tasks side by side (text rows pad the image part, short rows pad to
   the longest task); ``round`` trains one batch of every task per update.
2. **Training throughput** (target tokens/s, samples/s) of the same tiny model, same
   optimizer and token budget, through fairseq's own ``Trainer.train_step`` over the
   epoch iterator (data loading included, no DataLoader workers): every task alone
   (``--task multitask`` with that one task), then all tasks in each batch mode.
   ``x single`` compares with the captioning task alone. The tasks differ in cost per
   target token (an image is 64 encoder positions; NLI's forced prefix is decoded
   without loss), so ``x alone`` compares with the time the task-alone runs would need
   for the very target tokens the multitask run trained, task by task: 1.0 means the
   multitask machinery costs nothing over training the tasks one by one.

The data are generated (``scripts/demo_data.py``): NLI, toy translation, and captioning
and visual grounding of the same shapes scenes (64 x 64 images in 8 x 8 ViT patches).
One vocabulary (trained on all the tasks' text) serves every run, so the models are alike.

torch runs ``--threads`` threads (2; 1 in quick mode). On a machine whose cores other
processes keep busy, more threads than free cores make every step wait for a descheduled
thread: check the "other processes" line, and try ``--threads 1`` there.

    python -m benchmarks --only multitask [--quick]
    python -m benchmarks.multitask [--quick] [--threads N]
"""
import argparse
import copy
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import ofasys_fairseq  # noqa: F401  (registers the task, model and criterion with fairseq)
from benchmarks.criterion import (cpu_seconds, demo_data, other_processes_cores,
                                  print_competition)
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

MODES = ("homogeneous", "mixed", "round")
BASELINE_MODE = "homogeneous"
CHUNK = 5  # timed steps a run takes in one turn


@dataclass(frozen=True)
class Settings:
    tasks: Tuple[str, ...] = ("nli", "translation", "shapes_caption", "shapes_grounding")
    single_task: str = "shapes_caption"  # the single-task baseline of the throughput table
    rows: int = 400  # training rows per task (the shapes tasks share their scenes)
    max_tokens: int = 4096  # the token budget (--max-tokens)
    max_sentences: int = 32  # --batch-size
    image_size: int = 64
    vit_patch_size: int = 8
    num_bins: int = 16
    vocab_size: int = 400
    embed_dim: int = 64
    ffn_embed_dim: int = 256
    attention_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    warmup_steps: int = 5  # untimed train_step calls per run
    steps: int = 40  # timed train_step calls per run
    threads: int = 2  # torch intra-op threads
    seed: int = 1


FULL = Settings()
# one thread: a smoke test must not crawl when other processes share a small machine
QUICK = Settings(rows=40, max_tokens=1024, max_sentences=8, embed_dim=32, ffn_embed_dim=64,
                 attention_heads=2, encoder_layers=1, decoder_layers=1, warmup_steps=1, steps=3,
                 threads=1)


# --- data and configuration ------------------------------------------------------------------


def instructions() -> Dict[str, Tuple[str, str]]:
    """Task name -> (instruction, data folder under the data directory)."""
    demo = demo_data()
    return {"nli": (demo.NLI_INSTRUCTION, "nli"),
            "translation": (demo.TRANSLATION_INSTRUCTION, "translation"),
            "shapes_caption": (demo.SHAPES_CAPTION_INSTRUCTION, "shapes"),
            "shapes_vqa": (demo.SHAPES_VQA_INSTRUCTION, "shapes"),
            "shapes_grounding": (demo.SHAPES_GROUNDING_INSTRUCTION, "shapes"),
            "shapes_region_caption": (demo.SHAPES_GROUNDED_CAPTION_INSTRUCTION, "shapes")}


def write_data(settings: Settings, data_dir: Path) -> None:
    demo = demo_data()
    folders = {instructions()[name][1] for name in settings.tasks}
    for name in sorted(folders & set(demo.TASKS)):
        demo.write_task(str(data_dir), name, settings.rows, 2, settings.seed)
    if "shapes" in folders:
        demo.write_shapes(str(data_dir), train=settings.rows, valid=2, seed=settings.seed)


def write_tasks_file(names: Sequence[str], data_dir: Path, path: Path) -> Path:
    """A ``--tasks`` YAML file (JSON strings are valid YAML scalars)."""
    lines = ["tasks:"]
    for name in names:
        instruction, folder = instructions()[name]
        lines += [f"  {name}:", f"    instruction: {json.dumps(instruction)}",
                  f"    data: {json.dumps(str(data_dir / folder))}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def training_args(settings: Settings, tasks_file: Path, mode: str, work_dir: Path) -> List[str]:
    s = settings
    return ["--task", "multitask", "--tasks", str(tasks_file), "--batch-mode", mode,
            "--vocab-size", str(s.vocab_size), "--num-bins", str(s.num_bins),
            "--image-size", str(s.image_size), "--image-adaptor", "vit",
            "--vit-patch-size", str(s.vit_patch_size),
            "--arch", "ofasys_tiny", "--embed-dim", str(s.embed_dim),
            "--ffn-embed-dim", str(s.ffn_embed_dim), "--attention-heads", str(s.attention_heads),
            "--encoder-layers", str(s.encoder_layers), "--decoder-layers", str(s.decoder_layers),
            "--criterion", "instruction_ce", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--lr", "0.001",
            "--max-tokens", str(s.max_tokens), "--batch-size", str(s.max_sentences),
            "--num-workers", "0", "--cpu", "--seed", str(s.seed), "--no-eval-metrics",
            "--save-dir", str(work_dir / "checkpoints"),
            "--vocab-cache-dir", str(work_dir / "vocab-cache")]


def parse(args: List[str]):
    return convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), args))


def base_config(settings: Settings, data_dir: Path, work_dir: Path):
    """The configuration of every run: all tasks, homogeneous, one shared vocabulary
    (trained on all the tasks' text), so that the single-task and multitask models are
    the very same size."""
    tasks_file = write_tasks_file(settings.tasks, data_dir, work_dir / "all.yaml")
    cfg = parse(training_args(settings, tasks_file, BASELINE_MODE, work_dir))
    task = tasks.setup_task(cfg.task)
    task.prepare()
    spm = work_dir / "shared.model"
    spm.write_bytes(task.vocab.sentencepiece_model)
    cfg.task.sentencepiece_model = str(spm)
    return cfg


@dataclass
class Run:
    name: str
    mode: str
    trainer: Trainer
    task: object
    patches: Dict[str, int]  # feature adapter key -> positions per slot (patches per image)


def build_run(settings: Settings, base_cfg, name: str, task_names: Sequence[str], mode: str,
              data_dir: Path, work_dir: Path) -> Run:
    """Task, model, criterion and fairseq ``Trainer`` of one run: ``base_cfg`` (parsed
    once: fairseq builds its parser in seconds) with this run's tasks, mode and folder."""
    work_dir.mkdir(parents=True)
    cfg = copy.deepcopy(base_cfg)
    cfg.task.tasks = str(write_tasks_file(task_names, data_dir, work_dir / "tasks.yaml"))
    cfg.task.batch_mode = mode
    cfg.checkpoint.save_dir = str(work_dir / "checkpoints")
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(settings.seed)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    encoder = model.encoder
    patches = {key: encoder.adapters[key].grid ** 2 for key in encoder.modality_of}
    return Run(name, mode, trainer, task, patches)


# --- 1. padding efficiency ------------------------------------------------------------------


def parts(sample: dict) -> List[dict]:
    """The forward passes of one collated sample (a round sample: one per task)."""
    if not sample:
        return []
    return list(sample["rounds"]) if "rounds" in sample else [sample]


def padding_counts(sample: dict, pad: int, patches: Dict[str, int]) -> Dict[str, int]:
    """Real and padded encoder and decoder positions of one forward pass."""
    net_input = sample["net_input"]
    src = net_input["src_tokens"]
    rows = src.size(0)
    encoder_real = int(src.ne(pad).sum())
    encoder_width = src.size(1)
    widths: Dict[int, int] = {}  # feature slot k -> its block's width
    for group in net_input.get("features", ()):
        slots, positions = group["slots"], patches[group["adapter"]]
        encoder_real += slots.size(0) * positions  # every image is all real patches
        for k in slots[:, 1].unique().tolist():
            widths[k] = max(widths.get(k, 0), positions)
    encoder_width += sum(widths.values())
    decoder = net_input["prev_output_tokens"]
    return {"encoder_real": encoder_real, "encoder_padded": rows * encoder_width,
            "decoder_real": int(decoder.ne(pad).sum()), "decoder_padded": decoder.numel(),
            "rows": rows}


def measure_padding(run: Run) -> dict:
    """One epoch of the run's batch plan, every batch collated as in training."""
    pad = run.task.target_dictionary.pad()
    epoch = run.trainer.get_train_iterator(epoch=1)
    totals = {"encoder_real": 0, "encoder_padded": 0, "decoder_real": 0,
              "decoder_padded": 0, "rows": 0}
    steps = batches = 0
    for sample in epoch.next_epoch_itr(shuffle=True):
        steps += 1
        for part in parts(sample):
            batches += 1
            for key, value in padding_counts(part, pad, run.patches).items():
                totals[key] += value
    return dict(totals, mode=run.mode, steps=steps, batches=batches,
                encoder=totals["encoder_real"] / totals["encoder_padded"],
                decoder=totals["decoder_real"] / totals["decoder_padded"])


# --- 2. throughput ------------------------------------------------------------------------


def task_tokens(sample: dict, pad: int, num_tasks: int) -> List[int]:
    """Target (loss) tokens of each task in one sample."""
    counts = [0] * num_tasks
    for part in parts(sample):
        per_row = part["target"].ne(pad).sum(1)
        for task, tokens in zip(part["task_ids"].tolist(), per_row.tolist()):
            counts[task] += tokens
    return counts


def samples_forever(run: Run):
    """Training samples epoch after epoch, as fairseq-train reads them."""
    epoch_itr = run.trainer.get_train_iterator(epoch=1)
    while True:
        yield from epoch_itr.next_epoch_itr(shuffle=True)
        epoch_itr = run.trainer.get_train_iterator(epoch_itr.next_epoch_idx,
                                                   load_dataset=False)


class Timed:
    """One run's training stream and what its timed steps trained."""

    def __init__(self, run: Run):
        self.run, self.stream = run, samples_forever(run)
        self.pad = run.task.target_dictionary.pad()
        self.times: List[float] = []
        self.samples = 0
        self.task_tokens = [0] * len(run.task.task_names)

    def step(self, timed: bool = True) -> List[int]:
        """One training step; returns each task's target tokens in it."""
        start = time.perf_counter()
        sample = next(self.stream)
        self.run.trainer.train_step([sample])
        seconds = time.perf_counter() - start
        counts = task_tokens(sample, self.pad, len(self.task_tokens))
        if timed:
            self.times.append(seconds)
            self.task_tokens = [a + b for a, b in zip(self.task_tokens, counts)]
            self.samples += sum(part["nsentences"] for part in parts(sample))
        return counts

    def warm_up(self, steps: int) -> None:
        """``steps`` untimed steps, and more until every task has trained once (its
        first batch pays one-off costs: the image adapter, closed-set steps, ...)."""
        seen = [False] * len(self.task_tokens)
        for done in itertools.count():
            if done >= steps and all(seen):
                return
            seen = [s or c > 0 for s, c in zip(seen, self.step(timed=False))]

    def result(self) -> dict:
        seconds = sum(self.times)
        return {"name": self.run.name, "mode": self.run.mode, "steps": len(self.times),
                "seconds": seconds, "ms_per_step": 1000 * statistics.median(self.times),
                "tokens_per_s": sum(self.task_tokens) / seconds,
                "samples_per_s": self.samples / seconds,
                "task_tokens": dict(zip(self.run.task.task_names, self.task_tokens))}


def measure_throughput(runs: Sequence[Run], settings: Settings) -> List[dict]:
    """``warmup_steps`` untimed then ``steps`` timed training steps per run; the runs
    take turns, ``CHUNK`` steps at a time in a shuffled order, so that machine noise
    hits them alike."""
    timed = [Timed(r) for r in runs]
    for t in timed:
        t.warm_up(settings.warmup_steps)
    order = random.Random(settings.seed)
    for first in range(0, settings.steps, CHUNK):
        turns = list(timed)
        order.shuffle(turns)
        for t in turns:
            for _ in range(min(CHUNK, settings.steps - first)):
                t.step()
    return [t.result() for t in timed]


def add_ratios(padding: List[dict], throughput: List[dict], settings: Settings) -> None:
    """Padding: each mode's efficiencies / homogeneous's. Throughput: target tokens/s /
    the single task's; and the time the task-alone runs would need for each run's
    target tokens, task by task, / the time the run took."""
    baseline = next(r for r in padding if r["mode"] == BASELINE_MODE)
    for r in padding:
        r["encoder_x"] = r["encoder"] / baseline["encoder"]
        r["decoder_x"] = r["decoder"] / baseline["decoder"]
    alone = {r["name"][:-len(" alone")]: r for r in throughput if r["name"].endswith(" alone")}
    single = alone[settings.single_task]
    for r in throughput:
        r["x_single"] = r["tokens_per_s"] / single["tokens_per_s"]
        expected = sum(tokens / alone[name]["tokens_per_s"]
                       for name, tokens in r["task_tokens"].items())
        r["x_alone"] = expected / r["seconds"]


# --- the runs -------------------------------------------------------------------------------


def run(settings: Settings = FULL, out=None) -> Dict[str, List[dict]]:
    """Generate, measure and print; returns {"padding": rows, "throughput": rows}."""
    out = out or sys.stdout
    started = time.perf_counter()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    print(f"multitask: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores", file=out)
    try:
        with tempfile.TemporaryDirectory(prefix="ofasys-multitask-benchmark-") as tmp:
            work = Path(tmp)
            data_dir = work / "data"
            write_data(settings, data_dir)
            cfg = base_config(settings, data_dir, work)
            multi = [build_run(settings, cfg, f"all tasks, {mode}", settings.tasks, mode,
                               data_dir, work / mode) for mode in MODES]
            padding = [measure_padding(r) for r in multi]
            singles = [build_run(settings, cfg, f"{name} alone", [name], BASELINE_MODE,
                                 data_dir, work / f"alone-{name}") for name in settings.tasks]
            before, wall = cpu_seconds(), time.perf_counter()
            throughput = measure_throughput(singles + multi, settings)
            others = other_processes_cores(before, cpu_seconds(), time.perf_counter() - wall)
    finally:
        torch.set_num_threads(saved_threads)
    add_ratios(padding, throughput, settings)
    print_padding(padding, settings, out)
    print_throughput(throughput, settings, out)
    print_competition(others, out)
    print(f"total {time.perf_counter() - started:.1f} s", file=out)
    return {"padding": padding, "throughput": throughput}


# --- report ---------------------------------------------------------------------------------


def print_padding(rows: List[dict], settings: Settings, out) -> None:
    print(f"\n== padding efficiency: one epoch of {', '.join(settings.tasks)} "
          f"({settings.rows} rows each), --max-tokens {settings.max_tokens}, --batch-size "
          f"{settings.max_sentences}; images {settings.image_size}x{settings.image_size} in "
          f"{settings.vit_patch_size}x{settings.vit_patch_size} ViT patches", file=out)
    header = (f"{'mode':<13}{'steps':>6}{'batches':>8}{'rows':>6}{'enc real':>10}"
              f"{'enc padded':>11}{'enc eff':>8}{'x homog':>8}{'dec real':>9}"
              f"{'dec padded':>11}{'dec eff':>8}{'x homog':>8}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(f"{r['mode']:<13}{r['steps']:>6}{r['batches']:>8}{r['rows']:>6}"
              f"{r['encoder_real']:>10,}{r['encoder_padded']:>11,}{r['encoder']:>8.3f}"
              f"{r['encoder_x']:>8.2f}{r['decoder_real']:>9,}{r['decoder_padded']:>11,}"
              f"{r['decoder']:>8.3f}{r['decoder_x']:>8.2f}", file=out)
    print("steps: updates in the epoch; batches: forward passes (a round step has one per "
          "task); rows: examples trained.", file=out)
    print("enc eff = enc real / enc padded: real = non-pad text tokens + patches of the "
          "images present; padded = rows x (widest text + (max slot + 1) x patches per "
          "image adapter), the encoder's B x T.", file=out)
    print("dec eff = dec real / dec padded: real = eos + forced prefix + target tokens of "
          "each row; padded = rows x widest. x homog: eff / homogeneous eff (< 1: more "
          "padding than one task per batch).", file=out)


def print_throughput(rows: List[dict], settings: Settings, out) -> None:
    s = settings
    print(f"\n== training throughput: OFASys width {s.embed_dim}, ffn {s.ffn_embed_dim}, "
          f"{s.encoder_layers}+{s.decoder_layers} layers, Adam, --max-tokens {s.max_tokens} "
          f"--batch-size {s.max_sentences}; torch {s.threads} threads, {os.cpu_count()} cores",
          file=out)
    print(f"   fairseq Trainer.train_step; per run {s.warmup_steps}+ warm-up steps (until "
          f"every task trained once), then {s.steps} timed steps, the runs taking turns "
          f"{CHUNK} steps at a time; data loading included (no DataLoader workers)", file=out)
    header = (f"{'run':<28}{'ms/step':>9}{'samples/s':>11}{'tgt tok/s':>11}{'x single':>10}"
              f"{'x alone':>9}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(f"{r['name']:<28}{r['ms_per_step']:>9.1f}{r['samples_per_s']:>11.1f}"
              f"{r['tokens_per_s']:>11.1f}{r['x_single']:>10.2f}{r['x_alone']:>9.2f}",
              file=out)
    print("ms/step: median time of one step (next batch + Trainer.train_step; a round step "
          "trains a batch of every task). samples/s, tgt tok/s: examples and target (loss) "
          "tokens per second over the timed steps.", file=out)
    print(f"x single: tgt tok/s / that of {s.single_task} alone. x alone: the time the "
          "task-alone runs would take for the same target tokens of each task, / the time "
          "taken (1.0: no multitask overhead; > 1: faster than training the tasks one by one).",
          file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --only multitask",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch threads (default {FULL.threads}; quick: {QUICK.threads})")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    run(replace(settings, threads=args.threads) if args.threads else settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
