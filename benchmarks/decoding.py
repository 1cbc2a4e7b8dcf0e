"""Decoding speed, one thread, in one process, all measured in the same run:

* **free text vs fairseq's transformer** -- ``--task translation --arch transformer`` (also
  with ofasys_tiny's layer recipe in fairseq's options, train_speed's ``OFASYS_LAYERS``: what
  the recipe costs apart from the plugin) and ``--task instruction --arch ofasys_tiny`` at
  equal dimensions (train_speed's: width 256, FFN 1024, 4 heads, 4 + 4 layers, tied
  embeddings), on the same rows with the same
  vocabulary (train_speed's corpus, binarized for fairseq), beam 5, every hypothesis forced
  to exactly ``length`` tokens (``--min-len`` = ``--max-len-b``) so that both do the same
  work. Each task batches the rows its own way (``--batch-size``) and decodes them with
  its own ``inference_step``, as fairseq-generate does. Untrained weights (seeded): the
  cost of a step does not depend on them.
* **constraints vs free text** -- one model of ours with an image and a text input, the
  same rows decoded three ways: a ``closed_set`` target of ``labels`` labels of
  ``label_tokens`` tokens each, a BOX target (four location tokens), and a free text
  target forced to the same length. The encoder's share of the time is printed.
* **OFASys.inference vs the fairseq-generate loop** -- the first model of ours on the same
  rows, beam 5, at most ``length`` tokens: ``OFASys.inference`` (reads the rows, batches
  them under its token budget) against ``get_batch_iterator`` + ``inference_step`` over
  the task's own dataset; the outputs are checked to be the same. Rows per second.

The first two compare decoding alone (``inference_step`` on batches made beforehand),
batch by batch in turns: batch 1 of every variant, then batch 2, ..., ``rounds`` times; a
variant's time is the sum of its batches' fastest decodings (as ``timeit`` reports: on a
shared machine slower runs measure the machine's interruptions too), so a slow moment
falls on every variant alike. The third times whole passes (reading and batching
included), in turns. A rate is tokens (or rows) per second, ``x`` its ratio to the
reference's.

    python -m benchmarks --only decoding [--quick]
"""
import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from benchmarks import train_speed
from benchmarks.criterion import (BenchmarkError, cpu_seconds, other_processes_cores,
                                  print_competition)
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from ofasys_fairseq import OFASys
from ofasys_fairseq.data.table import InMemoryTable
from ofasys_fairseq.plan import TaskPlan


@dataclass(frozen=True)
class Settings:
    corpus: train_speed.Settings  # dimensions, vocabulary and rows (its valid rows decode)
    length: int = 24  # tokens of every free-text hypothesis
    beam: int = 5
    batch_size: int = 32
    labels: int = 200
    label_tokens: int = 4  # a BOX has 4 location tokens: all three decode as many
    image_size: int = 64  # the vit adaptor's 16-pixel patches: 16 image positions
    rounds: int = 5
    seed: int = 1


FULL = Settings(train_speed.Settings(rows=600, valid_rows=240))
QUICK = Settings(replace(train_speed.QUICK, valid_rows=12), length=6, beam=2,
                 batch_size=4, labels=10, image_size=32, rounds=1)


class Pass(dict):
    """One timed pass: seconds, output tokens, rows (and what else a variant reports)."""


def timed(decode: Callable[[], Pass]) -> Pass:
    started = time.perf_counter()
    result = decode()
    result["seconds"] = time.perf_counter() - started
    return result


def model_and_task(args: List[str], seed: int):
    """A task and an untrained model as ``fairseq-train`` would build them from ``args``."""
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), args))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(seed)
    return task, task.build_model(cfg.model).eval()


class Decoder(NamedTuple):
    """A task's batches of some rows and its fairseq-generate step over one of them."""

    batches: Callable[[], Iterable[dict]]  # the task's batches, made as fairseq-generate does
    decode: Callable[[dict], Pass]  # ``inference_step`` on one batch


def decoder(task, model, dataset, generator_args: dict, batch_size: int) -> Decoder:
    generator = task.build_generator([model], argparse.Namespace(**generator_args))

    def batches() -> Iterable[dict]:
        return task.get_batch_iterator(dataset=dataset, max_sentences=batch_size,
                                       ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)

    def decode(sample: dict) -> Pass:
        with torch.no_grad():
            hypotheses = task.inference_step(generator, [model], sample)
        outputs = {i: nbest[0]["tokens"].tolist()
                   for i, nbest in zip(sample["id"].tolist(), hypotheses)}
        return Pass(tokens=sum(map(len, outputs.values())), rows=len(outputs), outputs=outputs)
    return Decoder(batches, decode)


def generate_pass(step: Decoder) -> Callable[[], Pass]:
    """fairseq-generate's loop: the task's batches, made and decoded one after another."""
    def decode() -> Pass:
        total = Pass(tokens=0, rows=0, outputs={})
        for sample in step.batches():
            part = step.decode(sample)
            total["tokens"] += part["tokens"]
            total["rows"] += part["rows"]
            total["outputs"].update(part["outputs"])
        return total
    return decode


def compare(variants: Dict[str, Callable[[], Pass]], rounds: int, rate: str) -> Dict[str, dict]:
    """Each variant's whole pass once per round, in turns; a variant's rate is its fastest
    pass's, ``x`` that rate over the first variant's."""
    passes: Dict[str, List[Pass]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, decode in variants.items():
            passes[name].append(timed(decode))
    summary = {}
    for name, runs in passes.items():
        best = min(runs, key=lambda p: p["seconds"])
        summary[name] = {"rate": best[rate] / best["seconds"], "tokens": runs[0]["tokens"],
                         "rows": runs[0]["rows"], "seconds": best["seconds"],
                         "outputs": runs[0]["outputs"]}
    return with_ratios(summary)


def compare_batches(variants: Dict[str, Decoder], rounds: int, rate: str) -> Dict[str, dict]:
    """The variants' decoding alone, batch by batch in turns (batch 1 of each, then batch
    2 of each, ...), ``rounds`` times; a variant's time is the sum over its batches of each
    batch's fastest decoding. A slow moment of the machine then falls on every variant
    alike, not on one whole pass. Batches are made beforehand (not timed)."""
    batches = {name: list(step.batches()) for name, step in variants.items()}
    fastest = {name: [float("inf")] * len(b) for name, b in batches.items()}
    first: Dict[str, List[Pass]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for index in range(max(map(len, batches.values()))):
            for name, step in variants.items():
                if index < len(batches[name]):
                    result = timed(lambda: step.decode(batches[name][index]))
                    fastest[name][index] = min(fastest[name][index], result["seconds"])
                    if round_ == 0:
                        first[name].append(result)
    summary = {}
    for name, results in first.items():
        total = {key: sum(r[key] for r in results) for key in ("tokens", "rows")}
        summary[name] = {**total, "rate": total[rate] / sum(fastest[name]),
                         "seconds": sum(fastest[name]),
                         "outputs": {k: v for r in results for k, v in r["outputs"].items()}}
    return with_ratios(summary)


def with_ratios(summary: Dict[str, dict]) -> Dict[str, dict]:
    """``x``: each row's rate over the first row's."""
    reference = summary[next(iter(summary))]["rate"]
    for row in summary.values():
        row["x"] = row["rate"] / reference
    return summary


# --- the three comparisons --------------------------------------------------------------------


def against_fairseq(settings: Settings, work: Path):
    """Free text: fairseq's transformer and ours, the same rows, forced lengths."""
    data_dir = work / "data"
    train_speed.write_corpus(settings.corpus, data_dir)
    binary = train_speed.binarize_for_fairseq(settings.corpus, data_dir, work)
    spm = work / "shared.model"
    theirs, their_model = model_and_task(
        train_speed.baseline_args(settings.corpus, binary, work), settings.seed)
    matched, matched_model = model_and_task(train_speed.baseline_args(
        settings.corpus, binary, work, train_speed.OFASYS_LAYERS), settings.seed)
    ours, our_model = model_and_task(
        train_speed.ours_args(settings.corpus, data_dir, spm, work), settings.seed)
    forced = {"beam": settings.beam, "max_len_a": 0, "max_len_b": settings.length,
              "min_len": settings.length}
    summary = compare_batches({
        train_speed.BASELINE: decoder(theirs, their_model, theirs.dataset("valid"), forced,
                                      settings.batch_size),
        train_speed.MATCHED: decoder(matched, matched_model, matched.dataset("valid"), forced,
                                     settings.batch_size),
        train_speed.OURS: decoder(ours, our_model, ours.dataset("valid"), forced,
                                  settings.batch_size)}, settings.rounds, "tokens")
    if len({row["tokens"] for row in summary.values()}) != 1:
        raise BenchmarkError(f"the models decoded different numbers of tokens: {summary}")
    return summary, (ours, our_model, data_dir)


def inference_vs_generate(settings: Settings, ours, model, data_dir: Path):
    """OFASys.inference and the fairseq-generate loop: the same rows and outputs."""
    rows = [{"src": row["src"]} for row in read_jsonl(data_dir / "valid.jsonl")]
    hub = OFASys(ours, model)
    limit = {"beam": settings.beam, "max_len_a": 0, "max_len_b": settings.length}

    def inference() -> Pass:
        predictions = hub.inference(data=rows, beam=settings.beam, max_len=settings.length)
        return Pass(tokens=0, rows=len(predictions), outputs=predictions)

    summary = compare({"fairseq-generate loop": generate_pass(
        decoder(ours, model, ours.dataset("valid"), limit, settings.batch_size)),
        "OFASys.inference": inference}, settings.rounds, "rows")
    generated = summary["fairseq-generate loop"]["outputs"]
    texts = [ours.vocab.decode([t for t in generated[i] if t != ours.dictionary.eos()])
             for i in range(len(rows))]
    if texts != [p["tgt"] for p in summary["OFASys.inference"]["outputs"]]:
        raise BenchmarkError("OFASys.inference and the generate loop decoded different outputs")
    return summary


def constrained_vs_free(settings: Settings, work: Path):
    """One image + text model; closed set, BOX and free text of the same length."""
    s, c = settings, settings.corpus
    data_dir = work / "vision"
    data_dir.mkdir()
    rng = random.Random(s.seed)
    texts = [row["src"] for row in read_jsonl(work / "data" / "valid.jsonl")]
    rows = []
    for i, text in enumerate(texts):
        path = data_dir / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (s.image_size, s.image_size, 3),
                                                          dtype=np.uint8)).save(path)
        x, y = rng.randint(0, s.image_size // 2), rng.randint(0, s.image_size // 2)
        rows.append({"img": str(path), "src": text, "box": [x, y, x + 8, y + 8]})
    for split in ("train", "valid"):
        with open(data_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    task, model = model_and_task([
        str(data_dir), "--task", "instruction", "--instruction",
        "[IMAGE:img] [TEXT:src] -> [BOX:box]", "--image-adaptor", "vit", "--image-size",
        str(s.image_size), "--sentencepiece-model", str(work / "shared.model"),
        "--no-eval-metrics", "--arch", "ofasys_tiny", "--embed-dim", str(c.embed_dim),
        "--ffn-embed-dim", str(c.ffn_embed_dim), "--attention-heads", str(c.attention_heads),
        "--encoder-layers", str(c.layers), "--decoder-layers", str(c.layers), "--cpu",
        "--criterion", "instruction_ce", "--save-dir", str(work / "unused")], s.seed)
    task.add_labels("label", labels_of_length(task, s.labels, s.label_tokens, rng))
    table = InMemoryTable([{"img": r["img"], "src": r["src"]} for r in rows],
                          base_dir=str(data_dir))
    datasets = {name: task.dataset_for(table, TaskPlan.parse(instruction).bind_columns(
        table.columns), with_target=False) for name, instruction in (
        ("free text", "[IMAGE:img] [TEXT:src] -> [TEXT:caption]"),
        ("closed set", "[IMAGE:img] [TEXT:src] -> [TEXT:label,closed_set]"),
        ("BOX", "[IMAGE:img] [TEXT:src] -> [BOX:box]"))}
    forced = {"beam": s.beam, "max_len_a": 0, "max_len_b": s.label_tokens,
              "min_len": s.label_tokens}
    free = {"beam": s.beam, "max_len_a": 0, "max_len_b": s.label_tokens + 4}
    summary = compare_batches({name: decoder(task, model, dataset,
                                             forced if name == "free text" else free,
                                             s.batch_size)
                               for name, dataset in datasets.items()}, s.rounds, "rows")
    if len({row["tokens"] for row in summary.values()}) != 1:
        raise BenchmarkError(f"the targets decoded different lengths: "
                             f"{ {n: r['tokens'] for n, r in summary.items()} }")
    encoder = timed(lambda: encode_all(task, model, datasets["free text"], s.batch_size))
    return summary, encoder["seconds"]


def read_jsonl(path: Path) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def labels_of_length(task, count: int, tokens: int, rng: random.Random) -> List[str]:
    """``count`` distinct labels of exactly ``tokens`` tokens (pieces of the vocabulary)."""
    pieces = [task.dictionary[i] for i in task.vocab.subword_ids]
    words = sorted({p.lstrip("\u2581") for p in pieces if p.startswith("\u2581")
                    and len(task.vocab.encode(p.lstrip("\u2581"))) == 1} - {""})
    labels = set()
    for _ in range(100 * count):
        label = " ".join(rng.sample(words, tokens))
        if len(task.vocab.encode(label)) == tokens:
            labels.add(label)
        if len(labels) == count:
            return sorted(labels)
    raise BenchmarkError(f"could not make {count} labels of {tokens} tokens")


def encode_all(task, model, dataset, batch_size: int) -> Pass:
    batches = task.get_batch_iterator(dataset=dataset, max_sentences=batch_size).next_epoch_itr(
        shuffle=False)
    with torch.no_grad():
        for sample in batches:
            model.encoder.forward_torchscript(sample["net_input"])
    return Pass()


# --- report ---------------------------------------------------------------------------------


def print_table(title: str, summary: Dict[str, dict], unit: str, out) -> None:
    print(f"\n{title}", file=out)
    header = f"{'':<28}{unit:>12}{'x':>8}{'seconds':>9}{'rows':>6}{'tokens':>8}"
    print(header + "\n" + "-" * len(header), file=out)
    for name, row in summary.items():
        print(f"{name:<28}{row['rate']:>12.1f}{row['x']:>8.3f}{row['seconds']:>9.2f}"
              f"{row['rows']:>6}{row['tokens']:>8}", file=out)


def run(settings: Settings = FULL, out=None) -> Dict[str, dict]:
    out = out or sys.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before, started = cpu_seconds(), time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="decoding-bench-") as work:
            work = Path(work)
            free, (ours, model, data_dir) = against_fairseq(settings, work)
            hub = inference_vs_generate(settings, ours, model, data_dir)
            constrained, encoder_seconds = constrained_vs_free(settings, work)
    finally:
        torch.set_num_threads(threads)
    s, c = settings, settings.corpus
    print(f"decoding: {c.valid_rows} rows, width {c.embed_dim}, FFN {c.ffn_embed_dim}, "
          f"{c.attention_heads} heads, {c.layers}+{c.layers} layers, beam {s.beam}, "
          f"--batch-size {s.batch_size}, one thread", file=out)
    print_table(f"free text, every hypothesis {s.length} tokens (x: over fairseq's "
                f"transformer)", free, "tok/s", out)
    print_table(f"OFASys.inference vs the fairseq-generate loop, at most {s.length} tokens, "
                f"same outputs", hub, "rows/s", out)
    print_table(f"constraints vs free text of the same length ({s.label_tokens} tokens + eos; "
                f"{s.labels} labels; image {s.image_size}px, vit), x: over free text; "
                f"encoder {encoder_seconds:.2f} s of each pass", constrained, "rows/s", out)
    print_competition(other_processes_cores(before, cpu_seconds(),
                                            time.perf_counter() - started), out)
    return {"free": free, "inference": hub, "constrained": constrained,
            "encoder_seconds": encoder_seconds}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --only decoding",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    try:
        run(QUICK if args.quick else FULL)
    except BenchmarkError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
