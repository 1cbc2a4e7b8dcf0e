"""Benchmark of the ``instruction_ce`` criterion's two design choices, against
baselines measured in the same run on the same batches:

* **ours** -- the real ``instruction_ce`` criterion: the decoder runs with
  ``features_only=True`` and only the positions with a loss are projected to the
  vocabulary (``no_loss`` prefixes, often most of the decoder sequence, are not);
  closed-set positions are scored with ``closed_set_loss`` over the per-position
  allowed ids of the label trie (``closed_set_steps``, N x K, K = widest branching).
* **A: full projection** -- the standard fairseq way: ``model(**net_input)`` computes
  logits at every decoder position. The very same criterion code then scores the
  same positions (the model is wrapped so that its "features" are the full logits),
  so A and ours differ only in where the projection happens.
* **B: dense masks** -- what the original OFA does: full logits, a dense
  B x T x V boolean constraint mask (closed-set positions allow only the trie's
  tokens), a masked log-softmax over B x T x V and label smoothing spread over the
  allowed tokens (same definition as ours, so the values agree).

The model is a real ``OFASysModel`` built with fairseq's own argument parsing,
task and criterion registries, on generated NLI-shaped data (``scripts/demo_data.py``):
two encoder texts, the decoder echoes both as a ``no_loss`` prefix, then a
``closed_set`` label. A second workload uses 200 generated multi-word labels.

Every run first checks that the three variants give the same loss, nll and
parameter gradients (``BenchmarkError`` otherwise), then times forward + backward.

    python -m benchmarks [--quick]
"""
import argparse
import contextlib
import importlib.util
import json
import math
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import ofasys_fairseq  # noqa: F401  (registers the task, model and criterion with fairseq)
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from ofasys_fairseq.data.vocabulary import train_sentencepiece

ROOT = Path(__file__).resolve().parents[1]
LOSS_RTOL = 1e-4  # relative tolerance on loss / nll between the variants
GRAD_RTOL = 1e-4  # max |grad - grad_ours| / max |grad_ours| over all parameters


class BenchmarkError(AssertionError):
    """The variants disagree: the comparison would be meaningless."""


@dataclass(frozen=True)
class Settings:
    batch_size: int = 32
    num_batches: int = 4  # distinct batches, each timed `repeats` times per variant
    repeats: int = 5
    warmup: int = 1  # untimed passes over all batches per variant
    vocab_size: int = 4000  # sentencepiece pieces (upper bound), shared vocabulary
    num_bins: int = 1000  # <bin_k> location tokens (OFA's default), also in the vocabulary
    embed_dim: int = 256  # ofasys_tiny width
    ffn_embed_dim: int = 1024
    attention_heads: int = 4
    encoder_layers: int = 2  # ofasys_tiny has 4 + 4; 2 + 2 keeps the run short
    decoder_layers: int = 2
    dropout: float = 0.1
    label_smoothing: float = 0.1
    many_labels: int = 200
    corpus_sentences: int = 20000  # synthetic text the shared vocabulary is trained on
    lexicon: int = 4000  # pseudo-words in that text (and in the generated labels)
    seed: int = 1


FULL = Settings()
QUICK = Settings(batch_size=4, num_batches=2, repeats=1, warmup=1, vocab_size=300, num_bins=16,
                 embed_dim=32, ffn_embed_dim=64, attention_heads=2, encoder_layers=1,
                 decoder_layers=1, many_labels=20, corpus_sentences=1000, lexicon=300)


# --- data -----------------------------------------------------------------------------------


def demo_data():
    """``scripts/demo_data.py`` (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("ofasys_demo_data",
                                                  ROOT / "scripts" / "demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pseudo_words(rng: random.Random, count: int) -> List[str]:
    syllables = [c + v + n for c in "bdfgklmnprstvz" for v in "aeiou" for n in ("", "n")]
    words = set()
    while len(words) < count:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def generated_labels(rng: random.Random, words: Sequence[str], count: int) -> List[str]:
    """``count`` distinct multi-word labels (2-3 words): a wide, deep label trie."""
    labels = set()
    while len(labels) < count:
        labels.add(" ".join(rng.choice(words) for _ in range(rng.randint(2, 3))))
    return sorted(labels)


@dataclass
class Workload:
    name: str
    rows: List[Dict[str, str]]
    labels: List[str]  # the closed set, passed as a --closed-set-labels file


def workloads(settings: Settings, rng: random.Random, words: Sequence[str]) -> List[Workload]:
    demo = demo_data()
    count = settings.batch_size * settings.num_batches
    nli = [demo.nli_example(rng) for _ in range(count)]
    labels = generated_labels(rng, words, settings.many_labels)
    many = [dict(row, label=rng.choice(labels)) for row in (demo.nli_example(rng)
                                                            for _ in range(count))]
    return [Workload("nli, 3 labels", nli, ["yes", "no", "maybe"]),
            Workload(f"nli, {len(labels)} labels", many, labels)]


def shared_sentencepiece(settings: Settings, rng: random.Random, words: Sequence[str],
                         loads: Sequence[Workload], instruction: str, path: Path) -> Path:
    """One vocabulary for all workloads, as in multitask training: the tasks' text plus
    synthetic sentences, so that it has about ``vocab_size`` pieces (trained on the NLI
    rows alone it would have a few hundred)."""
    weights = [1.0 / (i + 1) for i in range(len(words))]  # Zipf-like word frequencies
    corpus = [" ".join(rng.choices(words, weights, k=10)) for _ in range(settings.corpus_sentences)]
    literals = re.sub(r"\[[^\]]*\]|->", " ", instruction)
    for load in loads:
        corpus += [literals] * len(load.rows)
        corpus += [row[key] for row in load.rows for key in ("premise", "hypothesis")] * 5
        corpus += sorted({row["label"] for row in load.rows} | set(load.labels)) * 5
    path.write_bytes(train_sentencepiece(corpus, settings.vocab_size, cache_dir=None))
    return path


def write_rows(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


# --- task, model, criterion, batches ----------------------------------------------------------


@dataclass
class Setup:
    name: str
    task: object
    model: torch.nn.Module
    criterion: object
    batches: List[dict]


def build(settings: Settings, load: Workload, data_dir: Path, spm: Path,
          instruction: str) -> Setup:
    data_dir.mkdir(parents=True)
    write_rows(data_dir / "train.jsonl", load.rows)
    (data_dir / "labels.txt").write_text("\n".join(load.labels) + "\n", encoding="utf-8")
    s = settings
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data_dir), "--task", "instruction", "--instruction", instruction,
        "--sentencepiece-model", str(spm), "--num-bins", str(s.num_bins),
        "--closed-set-labels", "label=labels.txt",
        "--arch", "ofasys_tiny", "--embed-dim", str(s.embed_dim),
        "--ffn-embed-dim", str(s.ffn_embed_dim), "--attention-heads", str(s.attention_heads),
        "--encoder-layers", str(s.encoder_layers), "--decoder-layers", str(s.decoder_layers),
        "--dropout", str(s.dropout), "--criterion", "instruction_ce",
        "--label-smoothing", str(s.label_smoothing), "--cpu", "--seed", str(s.seed),
        "--no-eval-metrics", "--save-dir", str(data_dir / "checkpoints")])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(s.seed)
    model = task.build_model(cfg.model).train()
    criterion = task.build_criterion(cfg.criterion)
    dataset = task.datasets["train"]
    batches = [dataset.collater([dataset[i] for i in range(b * s.batch_size,
                                                           (b + 1) * s.batch_size)])
               for b in range(s.num_batches)]
    return Setup(load.name, task, model, criterion, batches)


# --- the three variants -------------------------------------------------------------------------


class FullProjection:
    """The model as fairseq's criteria use it: logits at every decoder position.

    Handed to the instruction_ce criterion instead of the model, whose "features" are
    then these full logits and whose output layer is the identity: the loss code is
    the criterion's own, only the place of the projection differs."""

    def __init__(self, model):
        self.model = model

    def __call__(self, src_tokens, src_lengths, prev_output_tokens, features_only=False,
                 **modality_inputs):
        return self.model(src_tokens, src_lengths, prev_output_tokens, **modality_inputs)

    @property
    def decoder(self):
        return self

    @staticmethod
    def output_layer(features):
        return features


def ours(setup: Setup, sample):
    loss, _, log = setup.criterion(setup.model, sample)
    return loss, log["nll_loss"]


def full_projection(setup: Setup, sample):
    loss, _, log = setup.criterion(FullProjection(setup.model), sample)
    return loss, log["nll_loss"]


def dense_mask_constraints(sample, shape, device) -> torch.Tensor:
    """B x T x V: True where a token may be scored. All True except at closed-set
    positions, which allow the trie's tokens only. Built with one vectorized scatter
    from the same per-position ids ours uses (OFA builds it per sample in Python)."""
    batch, length, vocab = shape
    mask = torch.ones(batch * length, vocab, dtype=torch.bool, device=device)
    steps = sample.get("closed_set_steps")
    if steps is not None:
        positions, allowed = steps["positions"], steps["allowed"]
        mask[positions] = False
        valid = allowed.ge(0)
        mask[positions.unsqueeze(1).expand_as(allowed)[valid], allowed[valid]] = True
    return mask.view(batch, length, vocab)


def dense_masks(setup: Setup, sample):
    """OFA's criterion: masked log-softmax over B x T x V, label smoothing over the K
    allowed tokens of each position (eps / (K - 1) each; none if K == 1), pad and
    no_loss positions zeroed after the fact."""
    eps, pad = setup.criterion.eps, setup.criterion.padding_idx
    logits = setup.model(**sample["net_input"])[0].float()
    mask = dense_mask_constraints(sample, logits.shape, logits.device)
    lprobs = F.log_softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
    target = sample["target"]
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.masked_fill(~mask, 0.0).sum(-1)
    k = mask.sum(-1)
    eps_i = torch.where(k > 1, eps / (k - 1).clamp(min=1), torch.zeros_like(nll))
    loss = (1.0 - eps - eps_i) * nll + eps_i * smooth
    ignored = target.eq(pad)
    return loss.masked_fill(ignored, 0.0).sum(), nll.masked_fill(ignored, 0.0).sum()


VARIANTS: Dict[str, Callable] = {
    "ours (instruction_ce)": ours,
    "A: full projection": full_projection,
    "B: dense masks (OFA)": dense_masks,
}


# --- measurements ---------------------------------------------------------------------------


def step(variant, setup: Setup, sample):
    setup.model.zero_grad(set_to_none=True)
    loss, nll = variant(setup, sample)
    loss.backward()
    return loss.detach(), nll.detach()


def check_agreement(setup: Setup, sample) -> Dict[str, dict]:
    """Same loss, nll and gradients for every variant (dropout on, same seed)."""
    results = {}
    for name, variant in VARIANTS.items():
        torch.manual_seed(1234)
        loss, nll = step(variant, setup, sample)
        grads = {n: p.grad.detach().clone() for n, p in setup.model.named_parameters()
                 if p.grad is not None}
        results[name] = {"loss": loss.item(), "nll": nll.item(), "grads": grads}
    reference_name = next(iter(VARIANTS))
    reference = results[reference_name]
    scale = max(g.abs().max().item() for g in reference["grads"].values())
    for name, result in results.items():
        for key in ("loss", "nll"):
            a, b = result[key], reference[key]
            if not math.isfinite(a) or abs(a - b) > LOSS_RTOL * max(abs(b), 1e-12):
                raise BenchmarkError(f"{setup.name}: {name} gives {key} {a!r}, "
                                     f"{reference_name} gives {b!r}")
        if set(result["grads"]) != set(reference["grads"]):
            raise BenchmarkError(f"{setup.name}: {name} has gradients for other parameters")
        error = max((result["grads"][n] - g).abs().max().item()
                    for n, g in reference["grads"].items())
        if not error <= GRAD_RTOL * scale:
            raise BenchmarkError(f"{setup.name}: {name}'s gradients differ from "
                                 f"{reference_name}'s by {error:.3g} (largest gradient {scale:.3g})")
        result["grad_error"] = error / scale
    for result in results.values():
        del result["grads"]
    return results


def time_variants(setup: Setup, settings: Settings) -> Dict[str, float]:
    """Median seconds per forward + backward over all (repeat, batch) pairs; the
    variants are interleaved batch by batch so machine noise hits them alike."""
    names = list(VARIANTS)
    for _ in range(settings.warmup):
        for sample in setup.batches:
            for name in names:
                step(VARIANTS[name], setup, sample)
    times = {name: [] for name in names}
    order = random.Random(settings.seed)
    for _ in range(settings.repeats):
        for sample in setup.batches:
            order.shuffle(names)
            for name in names:
                start = time.perf_counter()
                step(VARIANTS[name], setup, sample)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def quiet_stderr():
    """Kineto writes its start / stop chatter to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory(variant, setup: Setup, sample) -> int:
    """Peak bytes allocated by torch during one forward + backward, above what was
    allocated when it started (the batch and the parameters are already there; the
    old gradients are freed first). From the profiler's allocation / free events."""
    setup.model.zero_grad(set_to_none=True)
    with quiet_stderr():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:
            step(variant, setup, sample)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    if not events:
        raise BenchmarkError("the profiler recorded no memory events")
    return peak


def logit_elements(setup: Setup, sample, name: str) -> int:
    """Elements of the vocabulary-wide float tensors each variant materializes in its
    forward pass: ours projects the scored rows only (N x V); A projects every decoder
    position (B x T x V); B also builds a B x T x V mask, masked logits and log-probs."""
    vocab = len(setup.task.target_dictionary)
    rows = sample["target"].numel()
    if name.startswith("ours"):
        rows = int(sample["target"].ne(setup.criterion.padding_idx).sum())
    return rows * vocab


def cpu_seconds():
    """(CPU seconds all processes spent busy, CPU seconds of this process), or None where
    /proc/stat is unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def cpu_seconds_with_children():
    """``cpu_seconds`` counting this process's finished children (DataLoader workers once
    joined, subprocesses once waited for) as its own."""
    seconds = cpu_seconds()
    if seconds is None:
        return None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds[0], seconds[1] + children.ru_utime + children.ru_stime


def other_processes_cores(before, after, wall: float) -> Optional[float]:
    """Average number of cores other processes kept busy between two ``cpu_seconds``."""
    if before is None or after is None or wall <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)


def print_competition(others: Optional[float], out) -> None:
    if others is None:
        return
    print(f"other processes used {others:.2f} of {os.cpu_count()} cores on average meanwhile",
          file=out)
    if others > 0.25:
        print("WARNING: other processes competed for the cores: the timings are unreliable "
              "(rerun on a quiet machine).", file=out)


# --- report ---------------------------------------------------------------------------------------


def describe(setup: Setup) -> str:
    batch = setup.batches[0]
    pad = setup.criterion.padding_idx
    target = batch["target"]
    steps = batch.get("closed_set_steps")
    closed = batch["closed_set"]
    return (f"V={len(setup.task.target_dictionary)}, B={target.size(0)}, "
            f"decoder T={target.size(1)}, scored positions {int(target.ne(pad).sum())} of "
            f"{target.numel()}, closed-set K={steps['allowed'].size(1)} "
            f"({len(closed.labels)} labels, trie branching <= {closed.trie.max_branching})")


def run(settings: Settings = FULL, out=None) -> Dict[str, dict]:
    """Build, check, measure and print; returns {workload: {variant: measurements}}."""
    out = out or sys.stdout
    started = time.perf_counter()
    cpu_before = cpu_seconds()
    rng = random.Random(settings.seed)
    words = pseudo_words(rng, settings.lexicon)
    loads = workloads(settings, rng, words)
    instruction = demo_data().NLI_INSTRUCTION
    print(f"instruction: {instruction}", file=out)
    print(f"model: OFASysModel width {settings.embed_dim}, ffn {settings.ffn_embed_dim}, "
          f"{settings.encoder_layers}+{settings.decoder_layers} layers, dropout "
          f"{settings.dropout}; label smoothing {settings.label_smoothing}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=out)
    print(f"timing: median of {settings.repeats} x {settings.num_batches} batches per variant "
          f"after {settings.warmup} warm-up pass(es), forward + backward (zero_grad included)",
          file=out)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ofasys-benchmark-") as tmp:
        spm = shared_sentencepiece(settings, rng, words, loads, instruction,
                                   Path(tmp) / "shared.model")
        for index, load in enumerate(loads):
            setup = build(settings, load, Path(tmp) / f"workload{index}", spm, instruction)
            agreement = check_agreement(setup, setup.batches[0])
            seconds = time_variants(setup, settings)
            rows = {}
            for name, variant in VARIANTS.items():
                rows[name] = dict(agreement[name], seconds=seconds[name],
                                  peak_bytes=peak_memory(variant, setup, setup.batches[0]),
                                  logits=logit_elements(setup, setup.batches[0], name))
            results[load.name] = rows
            print_table(load.name, describe(setup), rows, out)
    print(file=out)
    print("ms/batch: median forward + backward time. xours: baseline / ours, so > 1 means "
          "ours is faster or smaller.", file=out)
    print("peak MB: peak torch CPU allocation during one forward + backward of the first "
          "batch, above what was allocated at its start (profiler allocation events).", file=out)
    print("logits: elements of the vocabulary-wide float logits computed (rows x V); B "
          "also allocates a B x T x V bool mask, masked logits and log-probs of that size.",
          file=out)
    print("grad err: max |gradient - ours| / max |gradient of ours| over all parameters, "
          "first batch, same dropout seed.", file=out)
    print(f"all variants agree on loss and nll (rel. {LOSS_RTOL:g}) and parameter gradients "
          f"(rel. {GRAD_RTOL:g}); total {time.perf_counter() - started:.1f} s", file=out)
    print_competition(other_processes_cores(cpu_before, cpu_seconds(),
                                            time.perf_counter() - started), out)
    return results


def print_table(name: str, description: str, rows: Dict[str, dict], out) -> None:
    reference = rows[next(iter(rows))]
    print(f"\n== {name}: {description}", file=out)
    print(f"   loss {reference['loss']:.6g}, nll {reference['nll']:.6g} (first batch)", file=out)
    header = (f"{'variant':<24}{'ms/batch':>10}{'xours':>8}{'peak MB':>10}{'xours':>8}"
              f"{'logits':>12}{'xours':>8}{'grad err':>10}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for variant, r in rows.items():
        print(f"{variant:<24}{1000 * r['seconds']:>10.2f}"
              f"{r['seconds'] / reference['seconds']:>8.2f}"
              f"{r['peak_bytes'] / 2 ** 20:>10.2f}"
              f"{r['peak_bytes'] / reference['peak_bytes']:>8.2f}"
              f"{r['logits']:>12,}{r['logits'] / reference['logits']:>8.2f}"
              f"{r['grad_error']:>10.1e}", file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    try:
        run(QUICK if args.quick else FULL)
    except BenchmarkError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    return 0
