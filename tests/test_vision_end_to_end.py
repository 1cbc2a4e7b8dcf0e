"""Vision end to end with fairseq's own tools on CPU: tiny models trained on the
generated digits and shapes, decoded with fairseq-generate and OFASys.inference."""
import json
import os
import re
import statistics

import demo_data
import numpy as np
import pytest
import torch
from PIL import Image

from ofasys_fairseq import OFASys
from ofasys_fairseq.data.table import DataError, Table
from ofasys_fairseq.modalities.box import parse_box
from ofasys_fairseq.modalities.box.accuracy import box_accuracy
from tests.test_end_to_end import USER_DIR, fairseq, valid_metrics

pytestmark = pytest.mark.slow

TRAIN_ARGS = ["--user-dir", USER_DIR, "--task", "instruction", "--arch", "ofasys_tiny",
              "--embed-dim", "64", "--ffn-embed-dim", "128", "--attention-heads", "4",
              "--encoder-layers", "2", "--decoder-layers", "1", "--dropout", "0.0",
              "--criterion", "instruction_ce", "--optimizer", "adam", "--lr", "0.003",
              "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50", "--batch-size", "32",
              "--vocab-size", "100", "--cpu", "--seed", "1", "--num-workers", "0",
              "--log-format", "simple", "--log-interval", "20", "--no-epoch-checkpoints"]
VIT_8 = ["--image-adaptor", "vit", "--vit-patch-size", "8"]


def train(data_dir, save_dir, instruction, metric, *extra) -> str:
    return fairseq("train", str(data_dir), *TRAIN_ARGS, "--instruction", instruction,
                   "--save-dir", str(save_dir), "--best-checkpoint-metric", metric,
                   "--maximize-best-checkpoint-metric", *extra)


def generate(data_dir, checkpoint, scoring, *extra) -> str:
    return fairseq("generate", str(data_dir), "--user-dir", USER_DIR, "--task", "instruction",
                   "--path", str(checkpoint), "--gen-subset", "valid", "--beam", "3",
                   "--batch-size", "32", "--cpu", "--scoring", scoring, *extra)


def hypotheses(output: str):
    return {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", output, re.M)}


def test_digit_classification_learns(tmp_path):
    data = demo_data.write_digits(str(tmp_path), train=1000, valid=200)
    log = train(data, tmp_path / "ck", demo_data.DIGITS_INSTRUCTION, "accuracy",
                "--image-size", "32", *VIT_8, "--max-epoch", "5")
    accuracy = max(float(m["accuracy"]) for m in valid_metrics(log))
    assert accuracy >= 80.0, log[-3000:]  # ten classes: chance is 10%; 97 in our runs
    output = generate(data, tmp_path / "ck" / "checkpoint_best.pt", "exact_match")
    assert float(re.search(r"exact_match = ([\d.]+)", output).group(1)) >= 80.0


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return demo_data.write_shapes(str(tmp_path_factory.mktemp("shapes")), train=2000, valid=100)


def mean_box_accuracy(data_dir) -> float:
    """Acc@0.5 of always answering the average training box: what a model that ignores
    the image and the text would reach."""
    train_boxes = [parse_box(row["region"]) for row in Table(os.path.join(data_dir, "train.tsv"))]
    mean = [statistics.mean(c) for c in zip(*train_boxes)]
    gold = torch.tensor([parse_box(row["region"])
                         for row in Table(os.path.join(data_dir, "valid.tsv"))])
    hits, total = box_accuracy(torch.tensor([mean] * len(gold)), gold)
    return 100.0 * hits / total


def test_grounding_learns_and_decodes_pixel_boxes(shapes, tmp_path):
    save_dir = tmp_path / "ck"
    log = train(shapes, save_dir, demo_data.SHAPES_GROUNDING_INSTRUCTION, "box_acc",
                "--image-size", "64", *VIT_8, "--num-bins", "16", "--embed-dim", "128",
                "--ffn-embed-dim", "256", "--decoder-layers", "2", "--lr", "0.004",
                "--max-epoch", "8", "--clip-norm", "1.0")
    accuracy = max(float(m["box_acc"]) for m in valid_metrics(log))
    baseline = mean_box_accuracy(shapes)
    # 68% after 500 updates, against 2% for always answering the mean box. Unclipped, when
    # grounding took off depended on the machine's arithmetic: 79% on one, 15% on another
    # (up at epoch 11 there); clipped, it rises from the first epochs (README, "Task
    # precedence": clipping let the demo's grounding take off sooner)
    assert accuracy >= 50.0 and accuracy >= baseline + 40.0, (accuracy, baseline, log[-3000:])

    checkpoint = save_dir / "checkpoint_best.pt"
    output = generate(shapes, checkpoint, "box_acc", "--post-process", "sentencepiece")
    generated = hypotheses(output)
    fractions = {i: [float(c) for c in h.split(",")] for i, h in generated.items()}
    assert len(fractions) == 100 and all(len(b) == 4 for b in fractions.values())
    assert re.search(r"Acc@IoU>=0.5 = [\d.]+ \(\d+/100\), mean IoU = [\d.]+", output)

    # the Python API returns the same boxes, in pixels of the original image
    rows = [Table(os.path.join(shapes, "valid.tsv"))[i] for i in range(8)]
    model = OFASys.from_pretrained(str(checkpoint))
    boxes = model.inference(data=[{"image": os.path.join(shapes, r["image"]),
                                   "region_text": r["region_text"]} for r in rows], beam=3)
    for i, result in enumerate(boxes):
        assert result["region"] == pytest.approx([64 * c for c in fractions[i]], abs=0.1)
    # from Python, the images themselves: Pillow images, uint8 or float arrays
    pictures = [Image.open(os.path.join(shapes, r["image"])) for r in rows]
    for image_of in (lambda p: p, lambda p: np.asarray(p.convert("RGB")),
                     lambda p: np.asarray(p.convert("RGB"), dtype=np.float32) / 255):
        given = [{"image": image_of(p), "region_text": r["region_text"]}
                 for p, r in zip(pictures, rows)]
        assert model.inference(data=given, beam=3) == boxes
    with pytest.raises(DataError, match=r"line 1, column 'image': expected an image array of "
                                         r"shape H x W or H x W x 3 \(or 1, 4\), found shape"):
        model.inference(data=[{"image": np.zeros((2, 3, 5)), "region_text": "x"}])


def test_captions_and_region_captions_through_the_resnet_adapter(shapes, tmp_path):
    log = train(shapes, tmp_path / "ck", demo_data.SHAPES_GROUNDED_CAPTION_INSTRUCTION, "cider",
                "--image-size", "32", "--resnet-depth", "18", "--num-bins", "32",
                "--max-epoch", "3")
    metrics = valid_metrics(log)
    assert {"bleu", "cider"} <= set(metrics[-1])
    assert float(metrics[-1]["loss"]) < float(metrics[0]["loss"])
    best_cider = max(float(m["cider"]) for m in metrics)
    # greedy, as validation decodes: fairseq-generate scores what validation scored
    output = generate(shapes, tmp_path / "ck" / "checkpoint_best.pt", "cider", "--beam", "1")
    assert float(re.search(r"CIDEr-D = ([\d.]+)", output).group(1)) == pytest.approx(
        best_cider, abs=0.05)
    # region captions are "<colour> <shape>", and the colour is the region's
    colours, kinds = demo_data.SHAPE_COLOURS, demo_data.SHAPE_TYPES
    captions = hypotheses(output)
    references = {int(i): t for i, t in re.findall(r"^T-(\d+)\t(.*)$", output, re.M)}
    assert len(captions) == len(references) == 100
    written = [c.split() for c in captions.values()]
    assert sum(len(w) == 2 and w[0] in colours and w[1] in kinds for w in written) >= 80
    right_colour = sum(captions[i].split()[:1] == references[i].split()[:1] for i in captions)
    # four colours: chance is 25 (52 after these 3 epochs in our runs)
    assert right_colour >= 100 / len(colours) + 15, (right_colour, captions)


# --- several images: slot embeddings, and geometry per slot -----------------------------

TWO_IMAGES = "[IMAGE:first{a}] [IMAGE:second{b}] which image holds the red square? -> " \
             "[TEXT:answer,closed_set]"


def write_red_square_pairs(root, train: int, valid: int, seed: int = 0):
    """Pairs of 16 px images, each with one square; exactly one square is red. The answer
    ("first" / "second") names that image: only the order of the slots tells them apart."""
    rng = np.random.default_rng(seed)
    os.makedirs(root / "images", exist_ok=True)
    others = [(20, 20, 220), (20, 160, 20), (200, 200, 20), (20, 180, 180)]

    def square(index: int, colour) -> str:
        image = np.full((16, 16, 3), 255, dtype=np.uint8)
        x, y = rng.integers(0, 9, 2)
        image[y:y + 8, x:x + 8] = colour
        name = f"images/{index:05d}.png"
        Image.fromarray(image).save(root / name)
        return name

    for split, count in (("train", train), ("valid", valid)):
        with open(root / f"{split}.jsonl", "w") as f:
            for _ in range(count):
                red_first = bool(rng.integers(2))
                other = others[rng.integers(len(others))]
                names = [square(len(os.listdir(root / "images")), c)
                         for c in ((220, 20, 20), other)[::1 if red_first else -1]]
                f.write(json.dumps({"first": names[0], "second": names[1],
                                    "answer": "first" if red_first else "second"}) + "\n")
    return root


@pytest.fixture(scope="module")
def red_square_pairs(tmp_path_factory):
    return write_red_square_pairs(tmp_path_factory.mktemp("pairs"), train=800, valid=200)


def test_two_images_of_one_instruction_are_told_apart(red_square_pairs, tmp_path):
    """Both images have the same size, modality and patch positions: only their slot
    embeddings say which came first (tests/models/test_adapters.py shows the model cannot
    tell them apart without), and the model learns which one is red."""
    log = train(red_square_pairs, tmp_path / "ck", TWO_IMAGES.format(a="", b=""), "accuracy",
                "--image-size", "16", *VIT_8, "--max-epoch", "6")
    accuracy = max(float(m["accuracy"]) for m in valid_metrics(log))
    assert accuracy >= 85.0, log[-3000:]  # two answers: chance is 50%


def test_one_run_reads_two_image_geometries(red_square_pairs, tmp_path):
    """Each slot resizes to its own size (a 4 x 4 and a 2 x 2 patch grid from the same
    ViT adapter, positions interpolated from one table); training, fairseq-generate and
    OFASys.inference all follow the slots' sizes."""
    instruction = TWO_IMAGES.format(a=",size=32", b="")
    log = train(red_square_pairs, tmp_path / "ck", instruction, "accuracy",
                "--image-size", "16", *VIT_8, "--max-epoch", "6")
    accuracy = max(float(m["accuracy"]) for m in valid_metrics(log))
    assert accuracy >= 85.0, log[-3000:]
    checkpoint = tmp_path / "ck" / "checkpoint_best.pt"
    output = generate(red_square_pairs, checkpoint, "exact_match")
    assert float(re.search(r"exact_match = ([\d.]+)", output).group(1)) == pytest.approx(
        accuracy, abs=0.01)
    model = OFASys.from_pretrained(str(checkpoint))
    rows = [json.loads(line) for line in open(red_square_pairs / "valid.jsonl")][:20]
    answers = model.inference(data=[{k: str(red_square_pairs / r[k]) for k in ("first", "second")}
                                    for r in rows])
    predicted = {int(i): h for i, h in hypotheses(output).items()}
    assert [a["answer"] for a in answers] == [predicted[i] for i in range(20)]
