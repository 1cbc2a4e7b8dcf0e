"""Benchmark of the AUDIO input pipeline, against baselines measured in the same run:

1. **Features throughput** (sounds/s and seconds of speech per second): ours --
   ``AudioModality.read`` (soundfile, channels averaged, a cached
   ``torchaudio.transforms.Resample`` to 16 kHz) then ``features`` (Kaldi filterbanks,
   normalized) -- against a plain torchaudio loop: ``soundfile.read``,
   ``torchaudio.functional.resample``, ``torchaudio.compliance.kaldi.fbank``, the same
   normalization (``torchaudio.load`` needs TorchCodec, which is not installed). The
   maximum absolute difference of the two outputs is printed. The sounds are the demo's
   eSpeak NG digit strings at 22.05 kHz (``scripts/demo_speech.py``). "kept": ours after
   a first epoch, the frames kept in memory (``--audio-frame-cache-mb``).
2. **Recognition training**: updates/s of a tiny speech recognizer (the demo's
   instruction, fairseq's parsing, task, model, criterion and Adam) through fairseq's
   epoch iterator, with the time blocked waiting for data, per DataLoader setting.

    python -m benchmarks --only audio_pipeline [--quick]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import soundfile
import torch
import torchaudio.functional as audio_functional
from torchaudio.compliance import kaldi

import ofasys_fairseq  # noqa: F401  (registers the task, model and criterion with fairseq)
from benchmarks.criterion import print_competition
from benchmarks.image_pipeline import (Loader, build_fairseq_training, measured, torch_threads,
                                       train_epochs)
from ofasys_fairseq.instruction import Instruction
from ofasys_fairseq.modalities import Context, get_modality
from ofasys_fairseq.modalities.audio.features import FeatureStatistics
from ofasys_fairseq.modalities.audio.frame_cache import FRAME_CACHE

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    utterances: int = 200
    repeats: int = 3  # timed passes per pipeline
    warmup: int = 1
    train_rows: int = 640
    batch_size: int = 32
    embed_dim: int = 64
    loaders: Tuple[Loader, ...] = (Loader(0, 0), Loader(0, 10), Loader(1, 10), Loader(2, 10))
    train_threads: Optional[int] = None
    seed: int = 1


FULL = Settings()
QUICK = Settings(utterances=6, repeats=1, warmup=0, train_rows=16, batch_size=8,
                 embed_dim=16, loaders=(Loader(0, 0), Loader(1, 10)))


def demo_speech():
    sys.path.insert(0, str(ROOT / "scripts"))
    import demo_speech
    return demo_speech


def ours(base_dir: str, statistics_: FeatureStatistics,
         frame_cache_mb: int = 0) -> Callable[[str], torch.Tensor]:
    audio = get_modality("AUDIO")
    slot = Instruction.parse("[AUDIO:wav] -> [TEXT:t]").slots[0]
    ctx = Context(None, {"statistics": statistics_._asdict(), "frame_cache_mb": frame_cache_mb},
                  base_dir=base_dir)
    return lambda cell: audio.features(audio.read(cell, slot, ctx), slot, ctx, [], None)[0]


def baseline(base_dir: str, statistics_: FeatureStatistics) -> Callable[[str], torch.Tensor]:
    mean, std = torch.tensor(statistics_.mean), torch.tensor(statistics_.std)

    def features(cell: str) -> torch.Tensor:
        samples, rate = soundfile.read(os.path.join(base_dir, cell), dtype="float32",
                                       always_2d=True)
        waveform = audio_functional.resample(torch.from_numpy(samples).mean(1), rate, 16000)
        frames = kaldi.fbank(waveform[None] * 32768, num_mel_bins=80, frame_length=25.0,
                             frame_shift=10.0, dither=0.0, sample_frequency=16000)
        return (frames - mean) / std
    return features


def measure_features(settings: Settings, work_dir: Path) -> List[dict]:
    data_dir = demo_speech().write_digits_task(str(work_dir), train=settings.utterances,
                                               valid=0, seed=settings.seed)
    cells = [f"wavs/train-{i}.wav" for i in range(settings.utterances)]
    seconds = sum(soundfile.info(os.path.join(data_dir, c)).duration for c in cells)
    statistics_ = FeatureStatistics([0.0] * 80, [1.0] * 80)
    pipelines = {"ours": ours(data_dir, statistics_), "baseline": baseline(data_dir, statistics_),
                 "kept": ours(data_dir, statistics_, frame_cache_mb=1024)}
    difference = max(float((pipelines["ours"](c) - pipelines["baseline"](c)).abs().max())
                     for c in cells[:10])
    FRAME_CACHE.clear()
    for cell in cells:  # a first epoch: "kept" times the later ones
        pipelines["kept"](cell)
    rates = {}
    with torch_threads(1):  # as in a DataLoader worker
        for name, pipeline in pipelines.items():
            times = []
            for repeat in range(settings.warmup + settings.repeats):
                start = time.perf_counter()
                for cell in cells:
                    pipeline(cell)
                if repeat >= settings.warmup:
                    times.append(time.perf_counter() - start)
            rates[name] = statistics.median(times)
    FRAME_CACHE.clear()
    return [{"sounds": len(cells), "seconds": seconds, "ours": rates["ours"],
             "baseline": rates["baseline"], "kept": rates["kept"], "difference": difference}]


def measure_training(settings: Settings, work_dir: Path) -> List[dict]:
    speech = demo_speech()
    data_dir = speech.write_digits_task(str(work_dir), train=settings.train_rows, valid=0,
                                        seed=settings.seed)
    s = settings
    training = build_fairseq_training([
        data_dir, "--task", "instruction", "--instruction", speech.ASR_INSTRUCTION,
        "--arch", "ofasys_tiny", "--embed-dim", str(s.embed_dim),
        "--ffn-embed-dim", str(2 * s.embed_dim), "--encoder-layers", "2",
        "--decoder-layers", "1", "--vocab-size", "60", "--criterion", "instruction_ce",
        "--optimizer", "adam", "--lr", "0.003", "--batch-size", str(s.batch_size), "--cpu",
        "--seed", str(s.seed), "--no-eval-metrics", "--save-dir",
        str(work_dir / "checkpoints"), "--vocab-cache-dir", str(work_dir / "vocab-cache")],
        s.seed)
    with torch_threads(settings.train_threads):
        return train_epochs(training, settings)


def print_features(rows: List[dict], settings: Settings, out) -> None:
    print(f"\n== features throughput: file -> normalized 80-bin filterbanks, median of "
          f"{settings.repeats} passes after {settings.warmup} warm-up; torch 1 thread", file=out)
    header = (f"{'sounds':>7}{'speech s':>10}{'ours /s':>10}{'base /s':>10}{'x base':>8}"
              f"{'speech x realtime':>19}{'max|diff|':>11}{'kept /s':>10}{'x base':>8}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        ours_rate, base_rate = r["sounds"] / r["ours"], r["sounds"] / r["baseline"]
        print(f"{r['sounds']:>7}{r['seconds']:>10.1f}{ours_rate:>10.1f}{base_rate:>10.1f}"
              f"{ours_rate / base_rate:>8.2f}{r['seconds'] / r['ours']:>19.0f}"
              f"{r['difference']:>11.4f}{r['sounds'] / r['kept']:>10.1f}"
              f"{r['baseline'] / r['kept']:>8.2f}", file=out)
    print("x base: ours / baseline sounds per second (> 1: ours is faster); speech x realtime: "
          "seconds of speech made into features per second (ours); max|diff|: largest "
          "difference of the two outputs in normalized log-mel units (the two resampling "
          "filters differ by ~1e-4 of a sample; logarithms magnify it in near-silent bins); "
          "kept: ours after a first epoch, the frames kept (--audio-frame-cache-mb).",
          file=out)


def print_training(rows: List[dict], settings: Settings, out) -> None:
    print(f"\n== recognition training: {settings.train_rows} spoken digit strings, batch "
          f"{settings.batch_size}, ofasys_tiny width {settings.embed_dim}, 2+1 layers, Adam; "
          f"torch {settings.train_threads or torch.get_num_threads()} threads", file=out)
    header = (f"{'DataLoader':<24}{'batches':>8}{'wait ms':>10}{'step ms':>10}{'ups':>8}"
              f"{'wait frac':>11}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        total = r["wait_ms"] + r["step_ms"]
        print(f"{r['loader']:<24}{r['batches']:>8}{r['wait_ms']:>10.1f}{r['step_ms']:>10.1f}"
              f"{1000 / total if total else 0:>8.2f}{r['fraction']:>11.3f}", file=out)
    print("ups: updates per second (1000 / (wait + step) ms, first batch excluded); wait frac: "
          "the share of it spent blocked on data.", file=out)


def run(settings: Settings = FULL, out=None) -> Dict[str, List[dict]]:
    out = out or sys.stdout
    started = time.perf_counter()
    print(f"audio pipeline: torch {torch.__version__}, {os.cpu_count()} cores", file=out)
    with tempfile.TemporaryDirectory(prefix="ofasys-audio-benchmark-") as tmp:
        features_dir, training_dir = Path(tmp) / "features", Path(tmp) / "training"
        features_dir.mkdir()
        training_dir.mkdir()
        features, others = measured(lambda: measure_features(settings, features_dir))
        print_features(features, settings, out)
        print_competition(others, out)
        training, others = measured(lambda: measure_training(settings, training_dir))
        print_training(training, settings, out)
        print_competition(others, out)
    print(f"total {time.perf_counter() - started:.1f} s", file=out)
    return {"features": features, "training": training}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --only audio_pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    run(QUICK if args.quick else FULL)
    return 0
