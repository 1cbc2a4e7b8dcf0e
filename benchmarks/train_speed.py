"""Training speed of ``--task instruction`` against fairseq's own translation model,
all trained by ``fairseq-train`` on the same parallel text, in the same run:

* **baseline** -- fairseq's ``--task translation --arch transformer`` on the corpus
  binarized by ``fairseq-preprocess``, with ``label_smoothed_cross_entropy``;
* **transformer, ofasys layers** -- the same with ofasys_tiny's layer recipe in
  fairseq's own options (pre-norm, GELU, learned positions, layer-normalized and
  unscaled embeddings: ``OFASYS_LAYERS``), to tell what the recipe costs from what
  the plugin costs;
* **ours** -- ``--task instruction --instruction "[TEXT:src] -> [TEXT:tgt]" --arch
  ofasys_tiny --criterion instruction_ce`` on the same rows as ``.jsonl``.

Equal dimensions: width 256, FFN 1024, 4 heads, 4 + 4 layers, all embeddings tied,
dropout 0.1, label smoothing 0.1, Adam, the same ``--max-tokens``, ``--max-update``
and ``--seed``; ``--cpu --num-workers 0`` (fairseq's default prefetch thread), no
validation, no checkpoints, one thread (``OMP_NUM_THREADS=1``).

Same tokens, same vocabulary: the instruction task's own vocabulary is built first (a
sentencepiece model trained on the training rows, then ``<mask>`` and the modalities'
reserved symbols); fairseq gets that very dictionary (``--srcdict``, joined) and the
rows as the pieces of that model, so every row has the same target token ids in all
runs (checked before training: ``BenchmarkError`` otherwise; ours' source has one more
token, its ``<s>``). The corpus is generated: pseudo-words with Zipf-like frequencies
in sentences of ``min_words``-``max_words`` words, their target a word-by-word mapping
onto another lexicon with adjacent pairs swapped.

The runs take turns at a fine grain, so that other processes on a shared machine slow
them alike: all ``runs`` x 3 ``fairseq-train`` processes start, one after the other, and
each computes one update in its turn while the others are stopped (SIGSTOP / SIGCONT
to its process group): baseline, ofasys layers, ours, baseline, ... A turn is timed from
the run's resumption to its ``train_inner`` log line (``--log-interval 1``), so waiting
for its turn does not count (fairseq's own ``wps`` would count it); its tokens are the
line's ``wpb`` (the update's target tokens). The rates are over whole epochs after the
first ``warmup_epochs`` (start-up, first batches): every run then trains on every row
once per epoch (checked: the timed tokens are the corpus's), so how a pipeline batches
and pads counts, and no run is timed on luckier batches than another. Target tokens per
wall second (data loading included), and per CPU second of the run's processes.
``x base`` is a run's rate over the baseline's of the same round, then averaged over the
rounds.
``--also-user-dir DIR`` adds ours from another copy of the plugin to the turns (a
change against the code before it, in the same run).

    python -m benchmarks --only train_speed [--quick]
    python -m benchmarks.train_speed [--quick] [--runs N] [--rows N] [--max-tokens N] [--max-epoch N]
                                     [--workers N] [--also-user-dir OTHER/ofasys_fairseq]
"""
import argparse
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import ofasys_fairseq  # noqa: F401  (registers the task, model and criterion with fairseq)
from benchmarks.criterion import (BenchmarkError, cpu_seconds, cpu_seconds_with_children,
                                  other_processes_cores, print_competition, pseudo_words)
from fairseq import options, tasks
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import preprocess

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = Path(ofasys_fairseq.__file__).resolve().parent
INSTRUCTION = "[TEXT:src] -> [TEXT:tgt]"
BASELINE = "transformer (translation)"
MATCHED = "transformer, ofasys layers"
OURS = "ofasys_tiny (instruction)"
MODELS = (BASELINE, MATCHED, OURS)
# ofasys_tiny's layer recipe (models/ofasys_model.py: transformer_config) in fairseq's options
OFASYS_LAYERS = ["--activation-fn", "gelu", "--encoder-normalize-before",
                 "--decoder-normalize-before", "--encoder-learned-pos", "--decoder-learned-pos",
                 "--layernorm-embedding", "--no-scale-embedding"]


@dataclass(frozen=True)
class Settings:
    rows: int = 1500  # training pairs
    valid_rows: int = 30
    lexicon: int = 3000  # pseudo-words per language
    min_words: int = 4
    max_words: int = 30
    vocab_size: int = 4000  # sentencepiece pieces (upper bound)
    embed_dim: int = 256
    ffn_embed_dim: int = 1024
    attention_heads: int = 4
    layers: int = 4  # encoder and decoder each
    dropout: float = 0.1
    max_tokens: int = 1024
    max_epoch: int = 2
    warmup_epochs: int = 1  # epochs left out of the rates (start-up, first batches)
    runs: int = 3  # runs of each model (runs of one model differ by a few percent)
    num_workers: int = 0  # --num-workers (0: data loading in the training process)
    seed: int = 1
    # other copies of the plugin (``--user-dir``) to train as ours, in the same turns: a
    # change measured against the code before it
    other_user_dirs: Tuple[str, ...] = ()


FULL = Settings()
QUICK = Settings(rows=200, valid_rows=5, lexicon=200, min_words=2, max_words=10,
                 vocab_size=300, embed_dim=32, ffn_embed_dim=64, attention_heads=2, layers=1,
                 max_tokens=256, runs=1)


def models(settings: Settings) -> List[str]:
    """The runs' model names: ``MODELS``, then ours from each of ``other_user_dirs``."""
    return list(MODELS) + [f"{OURS[:-len(' (instruction)')]} from {path}"
                           for path in settings.other_user_dirs]


# --- data -----------------------------------------------------------------------------------


def parallel_rows(settings: Settings, count: int, rng: random.Random,
                  source_words: Sequence[str], target_of: Dict[str, str]) -> List[Dict[str, str]]:
    weights = [1.0 / (i + 1) for i in range(len(source_words))]  # Zipf-like frequencies
    rows = []
    for _ in range(count):
        words = rng.choices(source_words, weights, k=rng.randint(settings.min_words,
                                                                  settings.max_words))
        target = [target_of[w] for w in words]
        for i in range(0, len(target) - 1, 2):  # another word order
            target[i], target[i + 1] = target[i + 1], target[i]
        rows.append({"src": " ".join(words), "tgt": " ".join(target)})
    return rows


def write_corpus(settings: Settings, data_dir: Path) -> None:
    """``train.jsonl`` and ``valid.jsonl`` with ``src`` and ``tgt`` columns."""
    rng = random.Random(settings.seed)
    words = pseudo_words(rng, 2 * settings.lexicon)
    rng.shuffle(words)
    source, target = words[:settings.lexicon], words[settings.lexicon:]
    target_of = dict(zip(source, target))
    data_dir.mkdir(parents=True)
    for split, count in (("train", settings.rows), ("valid", settings.valid_rows)):
        with open(data_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in parallel_rows(settings, count, rng, source, target_of):
                f.write(json.dumps(row) + "\n")


def instruction_task(data_dir: Path, extra: Sequence[str] = ()):
    """Our task as ``fairseq-train`` sets it up from these arguments."""
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data_dir), "--task", "instruction", "--instruction", INSTRUCTION,
        "--arch", "ofasys_tiny", "--criterion", "instruction_ce", *extra])
    return tasks.setup_task(convert_namespace_to_omegaconf(args).task)


def binarize_for_fairseq(settings: Settings, data_dir: Path, work: Path) -> Path:
    """Our vocabulary (trained as our task trains it) to ``shared.model`` and a fairseq
    ``dict.txt`` with the same symbols in the same order; the rows as pieces of that
    model in ``{split}.src`` / ``.tgt``; then ``fairseq-preprocess`` (its ``main``, in this
    process). Returns the binarized directory."""
    task = instruction_task(data_dir, ["--vocab-size", str(settings.vocab_size),
                                       "--vocab-cache-dir", str(work / "vocab-cache")])
    task.prepare()
    (work / "shared.model").write_bytes(task.vocab.sentencepiece_model)
    dictionary = task.dictionary
    text_dir = work / "text"
    text_dir.mkdir()
    with open(text_dir / "dict.txt", "w", encoding="utf-8") as f:
        f.writelines(f"{symbol} 1\n" for symbol in dictionary.symbols[dictionary.nspecial:])
    for split in ("train", "valid"):
        with open(data_dir / f"{split}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        for side in ("src", "tgt"):
            with open(text_dir / f"{split}.{side}", "w", encoding="utf-8") as f:
                for row in rows:
                    ids = task.vocab.encode(" ".join(row[side].split()))
                    f.write(" ".join(dictionary[i] for i in ids) + "\n")
    binary = work / "bin"
    preprocess.main(options.get_preprocessing_parser().parse_args([
        "--source-lang", "src", "--target-lang", "tgt", "--trainpref", str(text_dir / "train"),
        "--validpref", str(text_dir / "valid"), "--destdir", str(binary),
        "--srcdict", str(text_dir / "dict.txt"), "--joined-dictionary", "--workers", "1"]))
    return binary


def check_same_tokens(data_dir: Path, binary: Path, spm: Path) -> dict:
    """Every training row has the same target ids (eos included) in both pipelines, and
    the same source ids after our ``<s>``; both dictionaries have the same symbols."""
    task = instruction_task(data_dir, ["--sentencepiece-model", str(spm)])
    task.load_dataset("train")
    ours = task.datasets["train"]
    theirs = Dictionary.load(str(binary / "dict.src.txt"))
    if list(theirs.symbols) != list(task.dictionary.symbols):
        raise BenchmarkError("fairseq's dictionary differs from ours")
    src = data_utils.load_indexed_dataset(str(binary / "train.src-tgt.src"), theirs)
    tgt = data_utils.load_indexed_dataset(str(binary / "train.src-tgt.tgt"), theirs)
    if not len(ours) == len(src) == len(tgt):
        raise BenchmarkError(f"{len(ours)} training rows for ours, {len(tgt)} for fairseq")
    eos = task.dictionary.eos()
    for i in range(len(ours)):
        example = ours[i]
        if (example.target + [eos] != tgt[i].tolist() or example.source[1:] != src[i].tolist()
                or example.prefix):
            raise BenchmarkError(f"row {i}: the two pipelines tokenize it differently")
    target_tokens = int(ours.tgt_sizes.sum())
    if target_tokens != int(tgt.sizes.sum()):
        raise BenchmarkError("the pipelines count different target tokens")
    return {"rows": len(ours), "vocabulary": len(task.dictionary),
            "target_tokens": target_tokens, "source_tokens": int(src.sizes.sum())}


# --- the runs -------------------------------------------------------------------------------


def child_env() -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def common_args(settings: Settings, work_dir: Path) -> List[str]:
    s = settings
    return ["--dropout", str(s.dropout), "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.0005",
            "--max-tokens", str(s.max_tokens), "--max-epoch", str(s.max_epoch),
            "--num-workers", str(s.num_workers), "--cpu", "--seed", str(s.seed),
            # fairseq's batch_by_size drops an epoch's last batch unless its size is a
            # multiple of this (fairseq issue #5036): every row trains once per epoch
            "--required-batch-size-multiple", "1",
            "--disable-validation", "--no-save", "--save-dir", str(work_dir / "checkpoints"),
            "--log-format", "json", "--log-interval", "1"]


def baseline_args(settings: Settings, binary: Path, work_dir: Path,
                  layers: Sequence[str] = ()) -> List[str]:
    s = settings
    return [str(binary), "--task", "translation", "--source-lang", "src", "--target-lang", "tgt",
            "--arch", "transformer", *layers, "--share-all-embeddings",
            "--encoder-embed-dim", str(s.embed_dim), "--decoder-embed-dim", str(s.embed_dim),
            "--encoder-ffn-embed-dim", str(s.ffn_embed_dim),
            "--decoder-ffn-embed-dim", str(s.ffn_embed_dim),
            "--encoder-layers", str(s.layers), "--decoder-layers", str(s.layers),
            "--encoder-attention-heads", str(s.attention_heads),
            "--decoder-attention-heads", str(s.attention_heads),
            "--criterion", "label_smoothed_cross_entropy", *common_args(settings, work_dir)]


def ours_args(settings: Settings, data_dir: Path, spm: Path, work_dir: Path,
              user_dir: Path = USER_DIR) -> List[str]:
    s = settings
    return [str(data_dir), "--user-dir", str(user_dir), "--task", "instruction",
            "--instruction", INSTRUCTION, "--sentencepiece-model", str(spm),
            "--no-eval-metrics", "--arch", "ofasys_tiny", "--embed-dim", str(s.embed_dim),
            "--ffn-embed-dim", str(s.ffn_embed_dim), "--attention-heads", str(s.attention_heads),
            "--encoder-layers", str(s.layers), "--decoder-layers", str(s.layers),
            "--criterion", "instruction_ce", *common_args(settings, work_dir)]


LOG_LINE = re.compile(r"\| (train_inner|train) \| (\{.*\})\s*$")  # fairseq's json log


def stat_fields(pid: int) -> Optional[List[str]]:
    """``/proc/PID/stat`` after the command name (state, ppid, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_cpu_seconds(pid: int) -> Optional[float]:
    """CPU seconds used so far by process ``pid`` (all its threads) and its children
    (DataLoader workers), or None where /proc is unavailable."""
    def used(fields):  # utime + stime
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    fields = stat_fields(pid)
    if fields is None:
        return None
    total = used(fields)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            child = stat_fields(int(entry))
            if child is not None and int(child[1]) == pid:
                total += used(child)
    return total


class Interval(NamedTuple):
    """One ``train_inner`` log line and what the run used since its previous one."""
    line: dict
    wall: float  # seconds from the run's resumption to this line
    cpu: Optional[float]  # CPU seconds of the run (its process tree) meanwhile
    others: Optional[float]  # cores other processes kept busy meanwhile


class Job:
    """One ``fairseq-train`` run (its own process group) that runs in turns: ``turn``
    resumes it, reads its log up to its next ``train_inner`` line and stops it again
    (SIGSTOP), so that only one run computes at a time while all runs see the same
    machine, interval by interval. Its intervals are timed from its resumption to the
    line: the time it waits for its turn is not counted."""

    def __init__(self, name: str, round_index: int, args: List[str], log_path: Path):
        self.name, self.round, self.args, self.log_path = name, round_index, args, log_path
        self.process: Optional[subprocess.Popen] = None
        self.lines: List[str] = []
        self.intervals: List[Interval] = []
        self.startup = 0.0  # seconds from the start to the first log line
        self.done = False

    def turn(self) -> None:
        cpu = None if self.process is None else tree_cpu_seconds(self.process.pid)
        system = cpu_seconds()
        resumed = time.perf_counter()
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fairseq_cli.train", *self.args], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                env=dict(child_env(), PYTHONUNBUFFERED="1"))
        else:
            self.signal(signal.SIGCONT)
        for text in iter(self.process.stdout.readline, ""):
            self.lines.append(text)
            match = LOG_LINE.search(text)
            if match and match.group(1) == "train_inner":
                wall = time.perf_counter() - resumed
                self.signal(signal.SIGSTOP)
                if cpu is None:  # the start: spawned, imported, loaded, first updates
                    self.startup = wall
                used, after = tree_cpu_seconds(self.process.pid), cpu_seconds()
                spent = None if cpu is None or used is None else used - cpu
                others = None
                if spent is not None and system is not None and after is not None:
                    mine = spent + after[1] - system[1]  # the run's and this process's
                    others = max(0.0, (after[0] - system[0] - mine) / wall)
                self.intervals.append(Interval(json.loads(match.group(2)), wall, spent, others))
                return
        self.finish()

    def signal(self, number: int) -> None:
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:  # it has exited
            pass

    def finish(self) -> None:
        returncode = self.process.wait()
        self.done = True
        self.log_path.write_text("".join(self.lines), encoding="utf-8")
        if returncode != 0:
            raise BenchmarkError(f"{self.name}: fairseq-train failed ({returncode}):\n"
                                 f"{''.join(self.lines)[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            self.process.wait()

    def result(self, settings: Settings) -> dict:
        if not self.intervals or int(self.intervals[-1].line["epoch"]) != settings.max_epoch:
            raise BenchmarkError(f"{self.name}: did not train {settings.max_epoch} epochs:\n"
                                 f"{''.join(self.lines)[-3000:]}")
        last = self.intervals[-1].line
        return dict(rate(self.intervals, settings), name=self.name, round=self.round,
                    startup=self.startup, final_loss=float(last["loss"]),
                    epochs=int(last["epoch"]))


def rate(intervals: Sequence[Interval], settings: Settings) -> dict:
    """Target tokens (``wpb`` of each logged update) per wall second and per CPU second
    of the run, over the updates of the epochs after the warm-up ones."""
    tokens = seconds = cpu = others = 0.0
    updates = 0
    for interval in intervals:
        if int(interval.line["epoch"]) > settings.warmup_epochs:
            tokens += float(interval.line["wpb"])
            seconds += interval.wall
            cpu = None if cpu is None or interval.cpu is None else cpu + interval.cpu
            others = (None if others is None or interval.others is None
                      else others + interval.others * interval.wall)
            updates += 1
    if updates == 0:
        raise BenchmarkError("no timed updates: raise max_epoch above the warm-up epochs")
    return {"tokens": tokens, "seconds": seconds, "updates": updates,
            "tokens_per_s": tokens / seconds, "ms_per_update": 1000 * seconds / updates,
            "tokens_per_cpu_s": tokens / cpu if cpu else None,
            "others": None if others is None else others / seconds}


def train_in_turns(jobs: Sequence[Job], settings: Settings) -> List[dict]:
    """All runs to the end, one log interval of each in turn; each cycle of turns starts
    one run later than the previous one, so that no run always follows the same one."""
    try:
        for cycle in itertools.count():
            pending = [job for job in jobs if not job.done]
            if not pending:
                break
            start = cycle % len(pending)
            for job in pending[start:] + pending[:start]:
                job.turn()
    finally:
        for job in jobs:
            job.kill()
    return [job.result(settings) for job in jobs]


def run(settings: Settings = FULL, out=None) -> dict:
    """Generate, binarize, check, train in turns and print; returns
    {"data": token counts, "runs": [per run], "summary": {model: ...}, "others": cores}."""
    out = out or sys.stdout
    if not 0 < settings.warmup_epochs < settings.max_epoch:
        raise ValueError("warmup_epochs must be positive (the first turns include the "
                         "start-up) and below max_epoch")
    started = time.perf_counter()
    before = cpu_seconds_with_children()
    with tempfile.TemporaryDirectory(prefix="ofasys-train-speed-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        write_corpus(settings, data_dir)
        binary = binarize_for_fairseq(settings, data_dir, work)
        data = check_same_tokens(data_dir, binary, work / "shared.model")
        commands = {BASELINE: lambda d: baseline_args(settings, binary, d),
                    MATCHED: lambda d: baseline_args(settings, binary, d, OFASYS_LAYERS),
                    OURS: lambda d: ours_args(settings, data_dir, work / "shared.model", d)}
        for name, path in zip(models(settings)[len(MODELS):], settings.other_user_dirs):
            commands[name] = (lambda p: lambda d: ours_args(
                settings, data_dir, work / "shared.model", d, Path(p).resolve()))(path)
        jobs = []
        for index in range(settings.runs):
            for name in models(settings):
                command = commands[name]
                run_dir = work / f"run{len(jobs)}"
                run_dir.mkdir()
                jobs.append(Job(name, index, command(run_dir), run_dir / "log.txt"))
        runs = train_in_turns(jobs, settings)
    check_whole_epochs(runs, data, settings)
    summary = summarize(runs, models(settings))
    print_report(settings, data, runs, summary, out)
    others = other_processes_cores(before, cpu_seconds_with_children(),
                                   time.perf_counter() - started)
    print_competition(others, out)
    print(f"total {time.perf_counter() - started:.1f} s", file=out)
    return {"data": data, "runs": runs, "summary": summary, "others": others}


def check_whole_epochs(runs: Sequence[dict], data: dict, settings: Settings) -> None:
    """Every run was timed on every target token of the timed epochs, once each."""
    expected = data["target_tokens"] * (settings.max_epoch - settings.warmup_epochs)
    for r in runs:
        if r["tokens"] != expected:
            raise BenchmarkError(f"{r['name']} (run {r['round'] + 1}): {r['tokens']:.0f} "
                                 f"timed target tokens, the timed epochs hold {expected}")


def summarize(runs: List[dict], names: Sequence[str] = MODELS) -> Dict[str, dict]:
    """Each run's rates / the baseline's in its round; per model, the means over its runs."""
    baseline = {r["round"]: r for r in runs if r["name"] == BASELINE}
    for r in runs:
        base = baseline[r["round"]]
        r["x_baseline"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["x_baseline_cpu"] = (r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
                               if r["tokens_per_cpu_s"] and base["tokens_per_cpu_s"] else None)
    summary = {}
    for name in names:
        mine = [r for r in runs if r["name"] == name]
        cpu = [r["x_baseline_cpu"] for r in mine if r["x_baseline_cpu"] is not None]
        summary[name] = {"runs": len(mine),
                         "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in mine),
                         "ms_per_update": statistics.mean(r["ms_per_update"] for r in mine),
                         "x_baseline": statistics.mean(r["x_baseline"] for r in mine),
                         "x_baseline_sd": (statistics.stdev(r["x_baseline"] for r in mine)
                                           if len(mine) > 1 else None),
                         "x_baseline_cpu": statistics.mean(cpu) if cpu else None}
    return summary


# --- report ---------------------------------------------------------------------------------


def print_report(settings: Settings, data: dict, runs: List[dict], summary: Dict[str, dict],
                 out) -> None:
    s = settings
    print(f"train_speed: {data['rows']} training pairs ({data['target_tokens']:,} target and "
          f"{data['source_tokens']:,} source tokens per epoch, the same ids in both; ours' "
          f"source adds <s>), vocabulary {data['vocabulary']} symbols in both", file=out)
    print(f"models: width {s.embed_dim}, FFN {s.ffn_embed_dim}, {s.attention_heads} heads, "
          f"{s.layers}+{s.layers} layers, tied embeddings, dropout {s.dropout}; Adam, "
          f"--max-tokens {s.max_tokens}, --max-epoch {s.max_epoch}, --num-workers "
          f"{s.num_workers}, OMP_NUM_THREADS=1, {os.cpu_count()} cores", file=out)
    print(f"rates over epochs {s.warmup_epochs + 1}-{s.max_epoch} (every row once per epoch): "
          f"target tokens (fairseq's train_inner wpb) per wall second and per CPU second of "
          f"the run; the {len(models(s)) * s.runs} runs take turns, one update each", file=out)
    w = max([30] + [len(name) + 2 for name in summary])
    header = (f"\n{'run':<5}{'model':<{w}}{'tgt tok/s':>10}{'ms/update':>10}{'x base':>8}"
              f"{'tok/CPU-s':>10}{'x base':>8}{'start s':>8}{'loss':>7}{'others':>7}")
    print(header, file=out)
    print("-" * (len(header) - 1), file=out)
    for r in runs:
        print(f"{r['round'] + 1:<5}{r['name']:<{w}}{r['tokens_per_s']:>10.1f}"
              f"{r['ms_per_update']:>10.1f}{r['x_baseline']:>8.3f}"
              f"{_number(r['tokens_per_cpu_s'], 10, 1)}{_number(r['x_baseline_cpu'], 8, 3)}"
              f"{r['startup']:>8.1f}{r['final_loss']:>7.3f}{_number(r['others'], 7, 2)}", file=out)
    print("-" * (len(header) - 1), file=out)
    for name, row in summary.items():
        print(f"{'mean':<5}{name:<{w}}{row['tokens_per_s']:>10.1f}{row['ms_per_update']:>10.1f}"
              f"{row['x_baseline']:>8.3f}{'':>10}{_number(row['x_baseline_cpu'], 8, 3)}"
              + ("" if row["x_baseline_sd"] is None else
                 f"   (x base sd {row['x_baseline_sd']:.3f} over {row['runs']} runs)"), file=out)
    print("x base: the rate / the baseline's in the same round (> 1: faster than fairseq's "
          "transformer); mean: over the runs. tok/CPU-s: per CPU second of the training "
          "process (its threads and workers). start s: from its start to its first log "
          "line (imports, data, first updates). loss: last logged training loss "
          "(base 2). others: cores other processes kept busy during the timed updates.",
          file=out)


def _number(value: Optional[float], width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --only train_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="runs of each model")
    parser.add_argument("--workers", type=int, default=None, help="--num-workers")
    parser.add_argument("--max-tokens", type=int, default=None, help="--max-tokens of every run")
    parser.add_argument("--rows", type=int, default=None, help="training pairs")
    parser.add_argument("--max-epoch", type=int, default=None,
                        help="epochs per run (the first warmup_epochs are not timed)")
    parser.add_argument("--also-user-dir", action="append", default=[], metavar="DIR",
                        help="also train ours from this copy of ofasys_fairseq (e.g. a git "
                             "worktree of the code before a change), in the same turns")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.runs:
        settings = replace(settings, runs=args.runs)
    if args.workers is not None:
        settings = replace(settings, num_workers=args.workers)
    if args.max_tokens:
        settings = replace(settings, max_tokens=args.max_tokens)
    if args.rows:
        settings = replace(settings, rows=args.rows)
    if args.max_epoch:
        settings = replace(settings, max_epoch=args.max_epoch)
    if args.also_user_dir:
        settings = replace(settings, other_user_dirs=tuple(args.also_user_dir))
    try:
        run(settings)
    except BenchmarkError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
