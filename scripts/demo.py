"""The main job on bundled data: one generalist trained on every demo task at once
(``configs/multitask_demo.yaml`` through ``fairseq-hydra-train``), then decoded per task
with ``fairseq-generate`` and ``OFASys.inference``, and a table of per-task metrics.

    python scripts/demo.py [--out demo_run] [HYDRA_OVERRIDE ...]   (e.g. optimization.max_update=500)
    python scripts/demo.py --specialists   # also one specialist per task, trained on as
                                           # many batches as the generalist gave that task,
                                           # and the generalist / specialist ratios
    python scripts/demo.py --config speech_demo [--specialists]   # speech recognition and
                                           # text-to-speech (configs/speech_demo.yaml): sounds
                                           # and spectrograms kept, human recordings transcribed

Everything a run writes (data, checkpoints, logs, generate output) is under ``--out``.
"""
import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

# fairseq calls torch.jit.script, deprecated in torch 2.x: nothing a demo user can act on
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)
# before fairseq is imported: one of its models (wav2vec2_classification) sets the root logger
# to DEBUG when imported, and every library's debug lines (matplotlib's font search) would
# reach the console
logging.basicConfig(level=logging.WARNING)

import demo_data  # noqa: E402
import demo_report  # noqa: E402
import demo_speech  # noqa: E402
import demo_tables  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "ofasys_fairseq")
CONFIG_DIR = os.path.join(ROOT, "configs")
CONFIGS = ("multitask_demo", "speech_demo")  # the main job; speech recognition and TTS
CONFIG_NAME = CONFIGS[0]  # the one this run trains (--config)
# metric -> (fairseq-generate --scoring, the score in its result line)
SCORERS = {
    "accuracy": ("exact_match", r"exact_match = ([\d.]+)"),
    "bleu": ("sacrebleu", r"BLEU = ([\d.]+)"),
    "cider": ("cider", r"CIDEr-D = ([\d.]+)"),
    "box_acc": ("box_acc", r"Acc@IoU>=0.5 = ([\d.]+)"),
    "exact_match": ("exact_match", r"exact_match = ([\d.]+)"),
    "cell_accuracy": ("cell_accuracy", r"cell_accuracy = ([\d.]+)"),
    "wer": ("wer", r"WER: ([\d.]+)"),
    "mcd": ("mcd", r"MCD: ([\d.]+)"),
}
# real human speech (CMU ARCTIC), which `make` puts in the environment; a task measured in
# WER transcribes it
ARCTIC_DIR = os.path.join(sys.prefix, "share", "cmu_arctic")
EXTRA_OVERRIDES: List[str] = []  # from the command line, for every training run
# the demo config's data directories (by name) and how to write them. The test splits,
# held out from checkpoint selection, are what `make results` reports: larger than the
# validation sets where the data allows (a yes/no accuracy on 1000 rows is +-1.6 points
# at one standard deviation, on 300 +-2.9); scikit-learn's 1797 digits leave 297 rows
# past training, halved; the speech tasks' 200 rows are sentences spoken by voices training
# never hears, and digit strings never read in training.
DATA_WRITERS = {
    "nli": lambda out: demo_data.write_task(out, "nli", 3000, 300, seed=1, test=1000),
    "translation": lambda out: demo_data.write_task(out, "translation", 3000, 300, seed=1,
                                                    test=1000),
    "digits": lambda out: demo_data.write_digits(out, valid=148, test=149),
    "shapes": lambda out: demo_data.write_shapes(out, test=1000),
    "sentences_speech": lambda out: demo_speech.write_sentences_task(out, test=200),
    "digits_tts": lambda out: demo_speech.write_digits_tts_task(out, test=200),
    **{name: (lambda out, name=name: demo_tables.write_table_task(out, name, test=500))
       for name in demo_tables.TABLE_TASKS},
}


def demo_tasks(config_name: str = None) -> Dict[str, dict]:
    """name -> {instruction, data, metrics, ...} of a demo config (default: this run's)."""
    return OmegaConf.to_container(demo_config(config_name).task.tasks)


def demo_config(config_name: str = None):
    """A demo config (default: this run's) as written, before any override."""
    return OmegaConf.load(os.path.join(CONFIG_DIR, (config_name or CONFIG_NAME) + ".yaml"))


def config_batch_size() -> int:
    """The run's batch size: an override's, else the demo config's."""
    for override in EXTRA_OVERRIDES:
        if override_key(override) == "dataset.batch_size":
            return int(override.split("=", 1)[1])
    return demo_config().dataset.batch_size


def write_data(out_dir: str, tasks: Dict[str, dict]) -> Dict[str, str]:
    """Write each data directory the tasks read once; name -> the task's data directory."""
    written = {}
    for spec in tasks.values():
        name = os.path.basename(spec["data"])
        if name not in written:
            written[name] = DATA_WRITERS[name](os.path.join(out_dir, "data"))
    return {task: written[os.path.basename(spec["data"])] for task, spec in tasks.items()}


def run_tool(tool: str, args: Sequence[str], log_path: str, echo=lambda line: None,
             cwd: str = None) -> str:
    """Run ``fairseq_cli.<tool>``, its whole output to ``log_path``; ``echo`` gives the
    short console line of an output line, or None."""
    command = [sys.executable, "-m", f"fairseq_cli.{tool}", *args]
    lines: List[str] = []
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
            # line by line as they come (a pipe would hold the tool's stdout in 8 KB blocks)
            env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            shown = echo(line)
            if shown:
                print("   ", shown, flush=True)
    if proc.returncode != 0:
        sys.exit(f"{tool} failed (exit {proc.returncode}); see {log_path}:\n"
                 + "".join(lines[-30:]))
    return "".join(lines)


def progress_line(line: str) -> Optional[str]:
    """One short console line per epoch of training and per validation (the full lines
    stay in the log file)."""
    if "[train][INFO]" not in line and "valid on 'valid' subset" not in line:
        return None  # not an epoch's or a validation's line (a warning, say)
    fields = log_fields(line)
    if "num_updates" not in fields:
        return None
    if "[train][INFO]" in line:
        return (f"epoch {line.split('epoch ')[1].split()[0]}: {fields['num_updates']:.0f} "
                f"updates, loss {fields.get('loss', math.nan):.2f}, "
                f"{fields.get('ups', math.nan):.1f} updates/s")
    if "valid on 'valid' subset" in line:
        value = ("score", fields["score"]) if "score" in fields else ("loss", fields["loss"])
        return f"validation after {fields['num_updates']:.0f} updates: {value[0]} {value[1]:.2f}"
    return None


def log_fields(line: str) -> Dict[str, float]:
    """``key value | key value`` pairs of a fairseq log line, the numeric ones."""
    return {k: float(v) for k, v in re.findall(r"(\w+) (-?\d+(?:\.\d+)?)(?= \||$)", line)}


def validations(log: str) -> List[Dict[str, float]]:
    return [log_fields(line) for line in log.splitlines() if "valid on 'valid' subset" in line]


def best_validation(log: str) -> Dict[str, float]:
    """The validation of the best checkpoint (highest selection score)."""
    return max(validations(log), key=lambda v: v.get("score", -math.inf))


def test_results(checkpoint: str, log_path: str) -> Dict[str, float]:
    """The checkpoint's metrics on its tasks' test splits, which checkpoint selection never
    saw (fairseq-validate, as validation scores them)."""
    log = run_tool("validate", ["--user-dir", USER_DIR, "--path", checkpoint, "--task",
                                "multitask", "--valid-subset", "test", "--cpu", "--batch-size",
                                str(config_batch_size())], log_path)
    line, = [line for line in log.splitlines() if "on 'test' subset |" in line]
    return log_fields(line)


def trained_batches(log: str, tasks: Dict[str, dict], batch_size: int) -> Dict[str, int]:
    """Batches each task was trained on: its samples over all epochs / its batch size (the
    task's own, or the run's)."""
    epochs = [log_fields(line) for line in log.splitlines() if "[train][INFO]" in line]
    return {name: math.ceil(sum(e.get(f"{name}_samples", 0) for e in epochs)
                            / (spec.get("batch_size") or batch_size))
            for name, spec in tasks.items()}


def with_extra_overrides(overrides: Sequence[str]) -> List[str]:
    """A run's own overrides, then the command line's they leave open: a run's own
    settings win (a task it removes takes the settings given for it along)."""
    given = [override_key(o) for o in overrides]
    return [*overrides, *(o for o in EXTRA_OVERRIDES if not settles(given, o))]


def hydra_train(overrides: Sequence[str], work_dir: str, echo=progress_line) -> str:
    overrides = with_extra_overrides(overrides)
    shutil.rmtree(work_dir, ignore_errors=True)  # train from scratch, never resume
    os.makedirs(work_dir)
    return run_tool("hydra_train", [
        "--config-dir", CONFIG_DIR, "--config-name", CONFIG_NAME, f"common.user_dir={USER_DIR}",
        f"checkpoint.save_dir={os.path.join(work_dir, 'checkpoints')}", *overrides],
        os.path.join(work_dir, "train.log"), echo,
        cwd=work_dir)  # Hydra writes .hydra/ and its log where it runs


def override_key(override: str) -> str:
    """The config path a Hydra override sets, adds or deletes (``++task.stages={...}``)."""
    return override.split("=")[0].lstrip("+~")


def settles(keys: Sequence[str], override: str) -> bool:
    """Whether the override's config path is one of ``keys`` or lies under one."""
    return (override_key(override) + ".").startswith(tuple(key + "." for key in keys))


def data_overrides(data_dirs: Dict[str, str]) -> List[str]:
    return [f"task.tasks.{name}.data={path}" for name, path in data_dirs.items()]


def generate_results(output: str, metric: str) -> Tuple[float, Dict[int, str]]:
    """fairseq-generate's score line and its detokenized hypotheses by sample id."""
    hypotheses = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", output, re.M)}
    return float(re.search(SCORERS[metric][1], output).group(1)), hypotheses


def evaluate_task(name: str, spec: dict, data_dir: str, checkpoint: str, work_dir: str,
                  model, best: Dict[str, float]) -> Dict[str, object]:
    """fairseq-generate (beam 5) on the task's validation rows, and OFASys.inference on the
    first three of them (sounds it makes are kept, with pictures of their spectrograms)."""
    from ofasys_fairseq.data.table import Table, find_split_files
    from ofasys_fairseq.modalities import get_modality

    metric = spec["metrics"][0]
    plan = model.task.member(name).plan
    generate_args = [
        data_dir, "--user-dir", USER_DIR, "--task", "instruction", "--trained-task", name,
        "--path", checkpoint, "--gen-subset", "valid", "--beam", "5", "--batch-size", "64",
        "--cpu", "--post-process", "sentencepiece", "--scoring", SCORERS[metric][0]]
    results_dir = os.path.join(work_dir, f"generate_{name}")
    saves_outputs = get_modality(plan.target.modality).saves_outputs()
    if saves_outputs:  # a file per row (a sound); the report goes to a file there too
        generate_args += ["--results-path", results_dir]
    generate_log = run_tool("generate", generate_args,
                            os.path.join(work_dir, f"generate_{name}.log"))
    if saves_outputs:
        with open(os.path.join(results_dir, "generate-valid.txt"), encoding="utf-8") as f:
            generate_log = f.read()
    generate_score, generated = generate_results(generate_log, metric)

    table = Table(find_split_files(data_dir, "valid")[0])  # its first rows
    rows = [table[i] for i in range(3)]
    target = plan.target.column
    image_columns = [s.column for s in plan.templates[0].feature_slots if s.modality == "IMAGE"]
    inputs = [{k: in_data_dir(data_dir, v) for k, v in row.items() if k != target}
              for row in rows]
    outputs = model.inference(data=inputs, beam=5, max_len=256, task=name)
    read = plan.bind_columns(table.columns).columns()
    examples, pictures = [], []
    for i, (row, output) in enumerate(zip(rows, outputs)):
        prediction, reference = output[target], row[target]
        kept = os.path.join(work_dir, "predictions", name, f"valid_{i}")
        if hasattr(prediction, "waveform"):  # a Sound
            prediction, mark, picture = keep_sound(prediction,
                                                   in_data_dir(data_dir, reference), kept)
            pictures.append(picture)
        else:
            mark = "ok" if is_correct(prediction, reference) else "WRONG"
        examples.append(({k: v for k, v in row.items() if k in read}, target, prediction,
                         mark, generated[i]))
        if any(s.modality == "BOX" for s in plan.templates[0].slots):
            pictures.append(draw_boxes(data_dir, row, image_columns[0], output[target], plan,
                                       kept + ".png"))
    return {"task": name, "metric": metric, "validation": best.get(f"{name}_{metric}", math.nan),
            "generate": generate_score, "examples": examples, "pictures": pictures,
            "data_dir": data_dir,
            "recordings": transcribe_recordings(model, name) if metric == "wer" else []}


def keep_sound(sound, reference_path: str, path: str) -> Tuple[str, str, str]:
    """Save a generated sound as ``path.wav`` and its spectrogram under its reference's as
    ``path.png``; the wav's path, its MCD from the reference, the picture's path."""
    from ofasys_fairseq.modalities.audio.mcd import mcd_stats, read_sound
    from ofasys_fairseq.modalities.audio.mel import log_mel

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sound.save(path + ".wav")
    reference = read_sound(reference_path)
    stats = mcd_stats([sound.waveform], [reference])
    draw_spectrograms(sound.log_mel, log_mel(reference), path + ".png")
    return path + ".wav", f"MCD {stats['_mcd_distance'] / stats['_mcd_frames']:.2f}", path + ".png"


def transcribe_recordings(model, name: str) -> List[Tuple[str, str, str, float]]:
    """The task's transcripts of the CMU ARCTIC recordings (real human speech; the demo's
    is synthetic): (wav, reference words, transcript, WER)."""
    import jiwer

    listing = os.path.join(ARCTIC_DIR, "utterances.jsonl")
    if not os.path.exists(listing):
        print(f"   no CMU ARCTIC recordings at {ARCTIC_DIR} (make puts them there)")
        return []
    with open(listing, encoding="utf-8") as f:
        recordings = [json.loads(line) for line in f]
    plan = model.task.member(name).plan
    column = next(s.column for s in plan.templates[0].feature_slots if s.modality == "AUDIO")
    outputs = model.inference(data=[{column: os.path.join(ARCTIC_DIR, r["wav"])}
                                    for r in recordings], beam=5, task=name)
    results = []
    for recording, output in zip(recordings, outputs):
        words, transcript = demo_speech.transcript(recording["text"]), output[plan.target.column]
        results.append((recording["wav"], words, transcript, 100 * jiwer.wer(words, transcript)))
    return results


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
    print(f"   trained in {time.time() - start:.0f}s; full log: "
          f"{os.path.join(work_dir, 'train.log')}", flush=True)
    best = best_validation(log)

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
        log = hydra_train([*specialist_overrides(name, tasks),
                           f"task.tasks.{name}.data={data_dirs[name]}",
                           f"optimization.max_update={batches[name]}"],
                          os.path.join(out_dir, "specialists", name))
        metric = spec["metrics"][0]
        values = [v[f"{name}_{metric}"] for v in validations(log) if f"{name}_{metric}" in v]
        scores[name] = min(values) if lower_is_better(metric) else max(values)
    return scores


def specialist_overrides(name: str, tasks: Dict[str, dict]) -> List[str]:
    """Overrides leaving ``name`` the run's one task, without stages, the config's or the
    command line's (alone, a task has no precedence to schedule, and stages name the
    others)."""
    return [*(f"~task.tasks.{other}" for other in tasks if other != name), "++task.stages=null"]


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


def draw_spectrograms(generated, reference, path: str, scale: int = 3) -> str:
    """Two log-mel spectrograms (frames x bins): the reference above the generated one,
    low frequencies at the bottom, darker is louder, both on the reference's range."""
    import numpy as np
    from PIL import Image

    low, high = float(reference.min()), float(reference.max())
    width = max(len(generated), len(reference))

    def pixels(frames):
        loudness = ((frames.T.flip(0) - low) / (high - low)).clamp(0, 1)
        image = (255 * (1 - loudness)).byte().numpy()
        return np.pad(image, ((0, 0), (0, width - image.shape[1])), constant_values=255)

    gap = np.full((4, width), 128, np.uint8)
    image = Image.fromarray(np.vstack([pixels(reference), gap, pixels(generated)]))
    image.resize((width * scale, image.height * scale), Image.NEAREST).save(path)
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
        for row, target, prediction, mark, generated in r["examples"]:
            inputs = "  ".join(f"{k}={v!r}" for k, v in row.items() if k != target)
            print(f"  {inputs}\n    -> {shown(prediction)} (reference {row[target]!r}, {mark}; "
                  f"fairseq-generate: {generated!r})")
        for path in r["pictures"]:
            print(f"  picture: {path}")
        if r["recordings"]:
            print("  real human speech (CMU ARCTIC), which training never heard:")
        for wav, words, transcript, wer in r["recordings"]:
            print(f"    {wav}: {words!r}\n      -> {transcript!r} (WER {wer:.0f})")
    print("\npictures: boxes in black from the data, magenta predicted; spectrograms with "
          "the reference above the generated sound")


def lower_is_better(metric: str) -> bool:
    from ofasys_fairseq.scoring.validation_metrics import LOWER_IS_BETTER

    return metric in LOWER_IS_BETTER


def quality_ratio(metric: str, generalist: float, specialist: float) -> float:
    """The generalist's quality over the specialist's: for an error rate or a distance,
    specialist / generalist."""
    if lower_is_better(metric):
        generalist, specialist = specialist, generalist
    return generalist / specialist if specialist > 0 else math.nan


def print_ratios(results: List[Dict[str, object]], batches: Dict[str, int],
                 specialists: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """Print the table; task -> its batches, specialist's value and ratio."""
    print("\n" + "=" * 78)
    print("Generalist / specialist, same model and recipe, same batches per task "
          "(best validation):")
    print(f"{'task':<22} {'metric':<9} {'batches':>8} {'generalist':>11} {'specialist':>11} "
          f"{'ratio':>7}")
    ratios = {}
    for r in results:
        special = specialists[r["task"]]
        ratio = quality_ratio(r["metric"], r["validation"], special)
        ratios[r["task"]] = {"batches": batches[r["task"]], "specialist": special,
                             "ratio": ratio}
        print(f"{r['task']:<22} {r['metric']:<9} {batches[r['task']]:>8} "
              f"{r['validation']:>11.2f} {special:>11.2f} {ratio:>7.3f}")
    mean = sum(r["ratio"] for r in ratios.values()) / len(ratios)
    print(f"{'mean ratio':<52} {mean:>22.3f}")
    return ratios


def main() -> None:
    global CONFIG_NAME
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="default: demo_run (demo_run_speech for speech_demo)")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for every training run, e.g. model.embed_dim=64")
    parser.add_argument("--config", choices=CONFIGS, default=CONFIG_NAME,
                        help="the demo config to train (configs/NAME.yaml)")
    parser.add_argument("--specialists", action="store_true",
                        help="also train one specialist per task with the generalist's budget "
                             "for that task, and print generalist / specialist ratios")
    args = parser.parse_args()
    default_out = "demo_run" if args.config == CONFIGS[0] else "demo_run_speech"
    # absolute: training runs in its own directory
    args.out = os.path.abspath(args.out or os.path.join(ROOT, default_out))
    EXTRA_OVERRIDES.extend(args.overrides)
    CONFIG_NAME = args.config
    start = time.time()
    tasks = demo_tasks()
    data_dirs = write_data(args.out, tasks)
    log, results = train_generalist(args.out, tasks, data_dirs)
    print_report(results)
    ratios = None
    if args.specialists:
        batches = trained_batches(log, tasks, config_batch_size())
        ratios = print_ratios(results, batches,
                              train_specialists(args.out, tasks, data_dirs, batches))
    html_report, md_report = demo_report.write_report(args.out, results, log, ratios)
    print(f"\nreport: {html_report} (self-contained) and {md_report}")
    print(f"demo finished in {time.time() - start:.0f}s; outputs under {args.out}")


if __name__ == "__main__":
    main()
