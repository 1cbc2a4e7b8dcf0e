"""Benchmark of the image input pipeline, against baselines measured in the same run:

1. **Preprocessing throughput** (images/s) of ours -- ``decode_image(cell, base_dir,
   draft_size=S)`` (JPEG draft: the decoder skips detail finer than S) and
   ``ImagePreprocessor("plain", S, train=False)`` giving ``uint8`` S x S tensors, stacked
   into a batch and normalized the way ``ImageAdapter`` does it on the model's device,
   ``(uint8.float() - 255 * mean) / (255 * std)`` -- against the obvious Pillow +
   torchvision way: ``Image.open(path).convert("RGB")``, ``Resize((S, S), bicubic,
   antialias)``, ``ToTensor()``, ``Normalize(ImageNet mean / std)``, stacked. Both start
   from a file path and end with the same normalized float batch; the mean absolute
   difference between the two batches is printed so the comparison stays honest.
   Synthetic photos are generated in a temporary directory (no download): COCO-sized
   640x480 JPEGs, 2048x1536 camera JPEGs (where draft decoding matters) and 640x480 PNGs.
2. **Data-wait fraction** of a short CPU training run: the task, a tiny OFASys model
   (ResNet-18 stages 1-3 on 64 x 64 images), criterion and optimizer built with
   fairseq's own argument parsing and registries, on generated shapes scenes
   (``scripts/demo_data.py``, visual grounding). One epoch per DataLoader setting through
   fairseq's epoch iterator (``task.get_batch_iterator(...).next_epoch_itr()``), timing
   the time blocked in ``next(iterator)`` against forward + backward + optimizer step.

    python -m benchmarks [--quick]
"""
import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw
from torchvision import transforms

import ofasys_fairseq  # noqa: F401  (registers the task, model and criterion with fairseq)
from benchmarks.criterion import (cpu_seconds_with_children, demo_data, other_processes_cores,
                                  print_competition)
from fairseq import optim, options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from ofasys_fairseq.modalities.image.adapter import ImageAdapter
from ofasys_fairseq.modalities.image.decode import decode_image
from ofasys_fairseq.modalities.image.preprocess import (IMAGENET_MEAN, IMAGENET_STD,
                                                        ImagePreprocessor)

NOISE_TILE = 509  # side of the sensor-noise tile (prime: no visible period at 2048 px)


@dataclass(frozen=True)
class ImageSet:
    """``count`` synthetic photos of ``width`` x ``height`` saved as ``format``."""

    format: str  # "JPEG" or "PNG"
    width: int
    height: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.format} {self.width}x{self.height}"


@dataclass(frozen=True)
class Loader:
    """A DataLoader setting of fairseq's epoch iterator."""

    num_workers: int
    buffer_size: int  # fairseq's --data-buffer-size: batches prefetched by a thread

    @property
    def name(self) -> str:
        return f"{self.num_workers} workers, buffer {self.buffer_size}"


@dataclass(frozen=True)
class Settings:
    image_sets: Tuple[ImageSet, ...] = (ImageSet("JPEG", 640, 480, 48),
                                        ImageSet("JPEG", 2048, 1536, 16),
                                        ImageSet("PNG", 640, 480, 24))
    sizes: Tuple[int, ...] = (256, 480)  # S: ofasys_tiny / medium and base / large
    batch_size: int = 16
    repeats: int = 3  # timed passes over each image set per pipeline
    warmup: int = 1  # untimed passes
    jpeg_quality: int = 90
    # the training run
    train_rows: int = 176
    canvas: int = 256  # shapes scenes are canvas x canvas PNGs, resized to image_size
    image_size: int = 64
    train_batch_size: int = 16
    embed_dim: int = 64
    resnet_depth: int = 18
    # fairseq-train's defaults are 1 worker and a buffer of 10
    loaders: Tuple[Loader, ...] = (Loader(0, 0), Loader(0, 10), Loader(1, 10), Loader(2, 10))
    train_threads: Optional[int] = None  # torch threads in training (None: torch's default)
    seed: int = 1


FULL = Settings()
QUICK = Settings(image_sets=(ImageSet("JPEG", 320, 240, 4), ImageSet("JPEG", 1024, 768, 2),
                             ImageSet("PNG", 320, 240, 2)),
                 sizes=(64,), batch_size=2, repeats=1, warmup=0, train_rows=8, canvas=64,
                 image_size=32, train_batch_size=4, embed_dim=32,
                 loaders=(Loader(0, 0), Loader(2, 10)))


# --- synthetic photos --------------------------------------------------------------------------


def noise_tile(rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise (sigma 10 levels), tiled over every photo at a random offset."""
    return rng.normal(0, 10, (NOISE_TILE, NOISE_TILE, 3)).astype(np.int16)


def synthetic_photo(rng: np.random.Generator, width: int, height: int,
                    noise: np.ndarray) -> Image.Image:
    """A photo-like image: smooth colour fields at two scales, a dozen hard-edged
    ellipses and sensor noise (so JPEG sizes are realistic, ~1 MB at 2048x1536 q90)."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    fine = Image.fromarray(rng.integers(0, 256, (max(1, height // 32), max(1, width // 32), 3),
                                        dtype=np.uint8))
    image = Image.blend(coarse.resize((width, height), Image.BICUBIC),
                        fine.resize((width, height), Image.BILINEAR), 0.35)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        side = int(rng.integers(width // 20, width // 4 + 1))
        draw.ellipse([x, y, x + side, y + 0.7 * side],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    top, left = (int(v) for v in rng.integers(0, NOISE_TILE, 2))
    reps = (-(-(height + top) // NOISE_TILE), -(-(width + left) // NOISE_TILE), 1)
    pixels = np.asarray(image, dtype=np.int16) + np.tile(noise, reps)[top:top + height,
                                                                      left:left + width]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_photos(image_set: ImageSet, base_dir: Path, rng: np.random.Generator,
                 noise: np.ndarray, quality: int) -> List[str]:
    """Save the set's photos under ``base_dir``; return their paths relative to it (the
    cells of a tsv ``image`` column)."""
    folder = f"{image_set.format.lower()}_{image_set.width}x{image_set.height}"
    (base_dir / folder).mkdir()
    suffix = ".jpg" if image_set.format == "JPEG" else ".png"
    cells = []
    for index in range(image_set.count):
        cell = f"{folder}/{index:04d}{suffix}"
        photo = synthetic_photo(rng, image_set.width, image_set.height, noise)
        photo.save(base_dir / cell, **({"quality": quality} if suffix == ".jpg" else {}))
        cells.append(cell)
    return cells


# --- the two pipelines ---------------------------------------------------------------------------

Pipeline = Callable[[Sequence[str]], torch.Tensor]  # cells -> B x 3 x S x S normalized floats


def adapter_normalization() -> Tuple[torch.Tensor, torch.Tensor]:
    """``ImageAdapter``'s own ``255 * mean`` and ``255 * std`` buffers (1 x 3 x 1 x 1)."""
    adapter = ImageAdapter(nn.Identity(), channels=3, grid=1, embed_dim=3)
    return adapter.mean, adapter.std


def ours(base_dir: str, size: int) -> Pipeline:
    """decode_image (JPEG draft) + ImagePreprocessor -> uint8, stacked as the collater
    does, normalized per batch as ImageAdapter.forward does."""
    preprocess = ImagePreprocessor("plain", size, train=False)
    mean, std = adapter_normalization()

    def batch(cells: Sequence[str]) -> torch.Tensor:
        pixels = torch.stack([preprocess(decode_image(cell, base_dir, draft_size=size))[0]
                              for cell in cells])
        return (pixels.to(mean.dtype) - mean) / std  # ImageAdapter.forward's first line

    return batch


def baseline(base_dir: str, size: int) -> Pipeline:
    """Plain Pillow + torchvision: full decode, resize, to float, normalize per image."""
    transform = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC,
                          antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

    def batch(cells: Sequence[str]) -> torch.Tensor:
        return torch.stack([transform(Image.open(os.path.join(base_dir, cell)).convert("RGB"))
                            for cell in cells])

    return batch


PIPELINES: Dict[str, Callable[[str, int], Pipeline]] = {"ours": ours, "baseline": baseline}


def chunks(cells: Sequence[str], size: int) -> List[Sequence[str]]:
    return [cells[i:i + size] for i in range(0, len(cells), size)]


def mean_abs_difference(first: Pipeline, second: Pipeline, cells: Sequence[str],
                        batch_size: int) -> float:
    """Mean |first - second| over every element of the normalized batches."""
    total, count = 0.0, 0
    for batch in chunks(cells, batch_size):
        a, b = first(batch), second(batch)
        if a.shape != b.shape:
            raise AssertionError(f"the pipelines give shapes {tuple(a.shape)} and {tuple(b.shape)}")
        total += (a - b).abs().sum().item()
        count += a.numel()
    return total / count


def time_passes(pipelines: Dict[str, Pipeline], cells: Sequence[str],
                settings: Settings) -> Dict[str, float]:
    """Median seconds of one pass over ``cells`` per pipeline; the pipelines alternate
    pass by pass (random order) so that machine noise hits them alike."""
    names = list(pipelines)
    order = random.Random(settings.seed)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for repeat in range(settings.warmup + settings.repeats):
        order.shuffle(names)
        for name in names:
            start = time.perf_counter()
            for batch in chunks(cells, settings.batch_size):
                pipelines[name](batch)
            if repeat >= settings.warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def torch_threads(count: Optional[int]):
    """torch's intra-op thread count inside the block (None: leave it)."""
    saved = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


def measure_preprocessing(settings: Settings, base_dir: Path) -> List[dict]:
    """One row per (image set, S): images/s of each pipeline and their difference.
    torch runs one thread, as in a DataLoader worker (where both pipelines would run)."""
    rng = np.random.default_rng(settings.seed)
    noise = noise_tile(rng)
    photo_sets = [(s, write_photos(s, base_dir, rng, noise, settings.jpeg_quality))
                  for s in settings.image_sets]
    rows = []
    for image_set, cells in photo_sets:
        for size in settings.sizes:
            pipelines = {name: build(str(base_dir), size) for name, build in PIPELINES.items()}
            with torch_threads(1):
                seconds = time_passes(pipelines, cells, settings)
            rows.append({
                "images": image_set.name, "count": len(cells), "size": size,
                "ours": len(cells) / seconds["ours"],
                "baseline": len(cells) / seconds["baseline"],
                "difference": mean_abs_difference(pipelines["ours"], pipelines["baseline"],
                                                  cells, settings.batch_size),
            })
    return rows


# --- data wait in a training run -------------------------------------------------------------


@dataclass
class Training:
    cfg: object
    task: object
    model: torch.nn.Module
    criterion: object
    optimizer: object


def build_training(settings: Settings, data_dir: str, work_dir: Path) -> Training:
    """Task, model, criterion and optimizer as fairseq-train builds them."""
    s = settings
    return build_fairseq_training([
        data_dir, "--task", "instruction",
        "--instruction", demo_data().SHAPES_GROUNDING_INSTRUCTION,
        "--arch", "ofasys_tiny", "--embed-dim", str(s.embed_dim),
        "--ffn-embed-dim", str(4 * s.embed_dim), "--encoder-layers", "1",
        "--decoder-layers", "1", "--resnet-depth", str(s.resnet_depth),
        "--image-size", str(s.image_size), "--vocab-size", "200",
        "--criterion", "instruction_ce", "--optimizer", "adam", "--lr", "0.001",
        "--batch-size", str(s.train_batch_size), "--cpu", "--seed", str(s.seed),
        "--no-eval-metrics", "--save-dir", str(work_dir / "checkpoints"),
        "--vocab-cache-dir", str(work_dir / "vocab-cache")], s.seed)


def build_fairseq_training(command_line: List[str], seed: int) -> Training:
    """Task (its training subset loaded), model, criterion and optimizer as fairseq-train
    builds them from ``command_line``."""
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), command_line))
    task = tasks.setup_task(cfg.task)
    task.load_dataset(cfg.dataset.train_subset)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, list(model.parameters()))
    return Training(cfg, task, model, criterion, optimizer)


def epoch_batches(training: Training, loader: Loader):
    """The training subset's ``EpochBatchIterator`` at epoch 1, as
    ``Trainer.get_train_iterator`` asks for it."""
    cfg, task = training.cfg, training.task
    return task.get_batch_iterator(
        dataset=task.dataset(cfg.dataset.train_subset),
        max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(),
                                                  training.model.max_positions(),
                                                  cfg.dataset.max_tokens),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=cfg.common.seed, num_workers=loader.num_workers, epoch=1,
        data_buffer_size=loader.buffer_size)


def stop_workers(batches) -> None:
    """Join the persistent DataLoader workers now. Left to the garbage collector (the
    iterators form a cycle) they are joined only after two 5 s timeouts, and their CPU
    time would not be counted as this run's."""
    workers = getattr(getattr(batches, "dataloader", None), "_iterator", None)
    if workers is not None and hasattr(workers, "_shutdown_workers"):
        workers._shutdown_workers()  # torch's own clean-up (private, but stable since 1.7)


def train_step(training: Training, sample: dict, update: int) -> None:
    """Forward + backward (``task.train_step``) and the optimizer step."""
    training.optimizer.zero_grad()
    training.task.train_step(sample, training.model, training.criterion, training.optimizer,
                             update)
    training.optimizer.step()


def train_epoch(training: Training, loader: Loader) -> dict:
    """Seconds blocked in ``next(iterator)`` and in training steps; the first batch
    (DataLoader start-up, empty buffers) is reported apart."""
    batches = epoch_batches(training, loader)
    iterator = batches.next_epoch_itr(shuffle=True)
    waits, steps = [], []
    for update in range(len(iterator)):
        start = time.perf_counter()
        sample = next(iterator)
        ready = time.perf_counter()
        train_step(training, sample, update)
        waits.append(ready - start)
        steps.append(time.perf_counter() - ready)
    stop_workers(batches)
    wait, step = sum(waits[1:]), sum(steps[1:])
    return {"loader": loader.name, "batches": len(waits), "first_batch": waits[0],
            "wait_ms": 1000 * wait / max(1, len(waits) - 1),
            "step_ms": 1000 * step / max(1, len(steps) - 1),
            "fraction": wait / (wait + step) if wait + step > 0 else 0.0}


def measure_data_wait(settings: Settings, work_dir: Path) -> List[dict]:
    """One epoch per loader setting, same model, data and batches."""
    data_dir = demo_data().write_shapes(str(work_dir), train=settings.train_rows, valid=0,
                                        seed=settings.seed, canvas=settings.canvas)
    training = build_training(settings, data_dir, work_dir)
    with torch_threads(settings.train_threads):
        return train_epochs(training, settings)


def train_epochs(training: Training, settings: Settings) -> List[dict]:
    """One warm-up step, then an epoch per loader setting."""
    first = next(epoch_batches(training, Loader(0, 0)).next_epoch_itr())
    train_step(training, first, 0)
    return [train_epoch(training, loader) for loader in settings.loaders]


# --- report --------------------------------------------------------------------------------------


def print_preprocessing(rows: List[dict], settings: Settings, out) -> None:
    print("\n== preprocessing throughput: file -> normalized float batch "
          f"(B={settings.batch_size}), median of {settings.repeats} passes after "
          f"{settings.warmup} warm-up; torch 1 thread (as in a DataLoader worker)", file=out)
    print("   ours: decode_image(draft_size=S) + ImagePreprocessor('plain', S) -> uint8, "
          "stacked, then ImageAdapter's normalization per batch", file=out)
    print("   baseline: Image.open().convert('RGB') + Resize((S,S), bicubic, antialias) + "
          "ToTensor + Normalize, stacked", file=out)
    header = (f"{'images':<18}{'n':>4}{'S':>5}{'ours img/s':>12}{'base img/s':>12}"
              f"{'x base':>8}{'mean|diff|':>12}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(f"{r['images']:<18}{r['count']:>4}{r['size']:>5}{r['ours']:>12.1f}"
              f"{r['baseline']:>12.1f}{r['ours'] / r['baseline']:>8.2f}"
              f"{r['difference']:>12.4f}", file=out)
    print("x base: ours / baseline images/s (> 1: ours is faster). mean|diff|: mean absolute "
          "difference of the normalized tensors (one 8-bit level is ~0.017).", file=out)


def print_data_wait(rows: List[dict], settings: Settings, out) -> None:
    print(f"\n== data wait: {settings.train_rows} shapes scenes ({settings.canvas}x"
          f"{settings.canvas} PNG -> {settings.image_size}x{settings.image_size}), visual "
          f"grounding, batch {settings.train_batch_size}, ofasys_tiny width "
          f"{settings.embed_dim}, 1+1 layers, ResNet-{settings.resnet_depth}, Adam; torch "
          f"{settings.train_threads or torch.get_num_threads()} threads", file=out)
    header = (f"{'DataLoader':<24}{'batches':>8}{'1st batch s':>12}{'wait ms':>10}"
              f"{'step ms':>10}{'total ms':>10}{'wait frac':>11}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(f"{r['loader']:<24}{r['batches']:>8}{r['first_batch']:>12.3f}"
              f"{r['wait_ms']:>10.1f}{r['step_ms']:>10.1f}{r['wait_ms'] + r['step_ms']:>10.1f}"
              f"{r['fraction']:>11.3f}", file=out)
    print("wait ms / step ms: mean time per batch blocked in next(epoch iterator) / in "
          "forward + backward + optimizer step, first batch excluded; total = wait + step; "
          "wait frac = wait / total. Prefetching (buffer thread, workers) shares the cores "
          "with the step, so compare totals too. fairseq-train's defaults: 1 worker, "
          "buffer 10 (a thread that prefetches batches).", file=out)


def measured(part: Callable[[], List[dict]]) -> Tuple[List[dict], Optional[float]]:
    """Run one part; also return how many cores other processes kept busy meanwhile."""
    before, start = cpu_seconds_with_children(), time.perf_counter()
    rows = part()
    return rows, other_processes_cores(before, cpu_seconds_with_children(),
                                       time.perf_counter() - start)


def run(settings: Settings = FULL, out=None) -> Dict[str, List[dict]]:
    """Generate, measure and print; returns {"preprocessing": rows, "data_wait": rows}."""
    out = out or sys.stdout
    started = time.perf_counter()
    print(f"image pipeline: torch {torch.__version__}, {os.cpu_count()} cores", file=out)
    with tempfile.TemporaryDirectory(prefix="ofasys-image-benchmark-") as tmp:
        photos, training = Path(tmp) / "photos", Path(tmp) / "training"
        photos.mkdir()
        training.mkdir()
        preprocessing, others = measured(lambda: measure_preprocessing(settings, photos))
        print_preprocessing(preprocessing, settings, out)
        print_competition(others, out)
        data_wait, others = measured(lambda: measure_data_wait(settings, training))
        print_data_wait(data_wait, settings, out)
        print_competition(others, out)
    print(f"total {time.perf_counter() - started:.1f} s", file=out)
    return {"preprocessing": preprocessing, "data_wait": data_wait}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --only image_pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args(argv)
    run(QUICK if args.quick else FULL)
    return 0
