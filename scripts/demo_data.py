"""Deterministic synthetic tasks for the demo and the tests (no download).

* ``nli``: premise / hypothesis pairs whose label (yes / no / maybe) follows
  from the words: dropping the adjective keeps the meaning (yes), negating the
  verb contradicts it (no), adding a time is unknowable (maybe).
* ``translation``: English-like phrases into a made-up language with its own
  lexicon and adjective-after-noun order (free text, scored with BLEU).
* ``digits``: scikit-learn's bundled 8x8 handwritten digits as grayscale PNGs,
  labelled with the digit's English word (image classification).
* ``shapes``: rendered scenes of two coloured shapes on a light background, with
  a compositional caption, a colour question, and one shape's exact pixel box
  (captioning, VQA, visual grounding and grounded captioning on one table).

The text tasks are written as ``{train,valid,test}.jsonl``; the vision sets as
``{train,valid,test}.tsv`` (header line) next to an ``images/`` folder of PNGs, with
image paths relative to the set's directory. A test split (held out from checkpoint
selection, for ``make results``) is written when its size is above 0.

    python scripts/demo_data.py OUT_DIR [--train 3000 --valid 300 --test 0 --seed 1]

``--train`` / ``--valid`` / ``--test`` size the text tasks; the vision sets use their
defaults.
"""
import argparse
import json
import os
import random
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

ADJECTIVES = ["red", "small", "old", "happy", "quiet", "brown"]
ANIMALS = ["cat", "dog", "horse", "bird", "fox", "goat"]
VERBS = ["sleeps", "eats", "plays", "waits", "sings"]
PLACES = ["garden", "house", "park", "barn", "forest", "river"]
TIMES = ["at night", "in the morning", "every day"]

NLI_INSTRUCTION = ("can text1 [TEXT:premise] imply text2 [TEXT:hypothesis]? -> can text1 "
                   "[TEXT:premise,no_loss] imply text2 [TEXT:hypothesis,no_loss]? "
                   "[TEXT:label,closed_set]")
TRANSLATION_INSTRUCTION = "translate to the toy language: [TEXT:en] -> [TEXT:toy]"

LEXICON = {
    "the": "lo", "a": "na", "red": "ruzo", "small": "piko", "old": "vec", "happy": "feli",
    "quiet": "tasi", "brown": "bruno", "cat": "mau", "dog": "kani", "horse": "kava",
    "bird": "avi", "fox": "vulpo", "goat": "kapra", "sees": "vidas", "likes": "amas",
    "follows": "sekvas", "one": "unu", "two": "du", "three": "tri",
}


def nli_example(rng: random.Random) -> Dict[str, str]:
    adjective, animal, verb, place = (rng.choice(ADJECTIVES), rng.choice(ANIMALS),
                                      rng.choice(VERBS), rng.choice(PLACES))
    premise = f"the {adjective} {animal} {verb} in the {place}"
    label = rng.choice(["yes", "no", "maybe"])
    if label == "yes":
        hypothesis = f"the {animal} {verb} in the {place}"
    elif label == "no":
        negated = rng.choice([f"does not {verb[:-1]}", f"never {verb}"])
        hypothesis = f"the {animal} {negated} in the {place}"
    else:
        hypothesis = f"the {animal} {verb} in the {place} {rng.choice(TIMES)}"
    return {"premise": premise, "hypothesis": hypothesis, "label": label}


def translation_example(rng: random.Random) -> Dict[str, str]:
    def noun_phrase(words: List[str]) -> List[str]:
        return [LEXICON[words[0]], LEXICON[words[2]], LEXICON[words[1]]]  # noun before adjective

    subject = [rng.choice(["the", "a"]), rng.choice(ADJECTIVES), rng.choice(ANIMALS)]
    verb = rng.choice(["sees", "likes", "follows"])
    obj = [rng.choice(["one", "two", "three"]), rng.choice(ADJECTIVES), rng.choice(ANIMALS)]
    english = " ".join(subject + [verb] + obj)
    toy = " ".join(noun_phrase(subject) + [LEXICON[verb]] + noun_phrase(obj))
    return {"en": english, "toy": toy}


TASKS = {
    "nli": (nli_example, NLI_INSTRUCTION),
    "translation": (translation_example, TRANSLATION_INSTRUCTION),
}


def split_sizes(train: int, valid: int, test: int) -> List[Tuple[str, int]]:
    """(split, rows) in the order rows are drawn: a test split only when asked for, drawn
    after the others so that adding it leaves them as they were."""
    return [("train", train), ("valid", valid)] + ([("test", test)] if test > 0 else [])


def write_task(out_dir: str, name: str, train: int, valid: int, seed: int,
               test: int = 0) -> str:
    """Write ``out_dir/name/{train,valid[,test]}.jsonl`` and return the task's directory."""
    make_example, _ = TASKS[name]
    rng = random.Random(f"{name}:{seed}")
    task_dir = os.path.join(out_dir, name)
    os.makedirs(task_dir, exist_ok=True)
    for split, count in split_sizes(train, valid, test):
        with open(os.path.join(task_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(json.dumps(make_example(rng)) + "\n")
    return task_dir


DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_INSTRUCTION = "[IMAGE:image] what does the image describe? -> [TEXT:label_name,closed_set]"

SHAPE_TYPES = ["circle", "square", "triangle"]
# Pure colours and a noisy light-grey background never share an RGB value, so a
# shape's pixels can be found again in the PNG by exact colour.
SHAPE_COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
                 "yellow": (255, 255, 0)}
BACKGROUND_GREY, BACKGROUND_NOISE = 232, 8
SHAPE_SIZE_RANGE = (0.22, 0.40)  # side length, as a fraction of the canvas
SHAPE_GAP = 2  # empty pixels between the two shapes' boxes, along at least one axis
SHAPES_COLUMNS = ["image", "caption", "question", "answer", "region_text", "region"]

SHAPES_CAPTION_INSTRUCTION = "[IMAGE:image] what does the image describe? -> [TEXT:caption]"
SHAPES_VQA_INSTRUCTION = "[IMAGE:image] [TEXT:question] -> [TEXT:answer,closed_set]"
SHAPES_GROUNDING_INSTRUCTION = ('[IMAGE:image] which region does the text " [TEXT:region_text] " '
                                'describe? -> [BOX:region]')
SHAPES_GROUNDED_CAPTION_INSTRUCTION = ("[IMAGE:image] what does the region describe? "
                                       "region: [BOX:region] -> [TEXT:region_text]")

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive (Pillow's getbbox)


def write_tsv(path: str, columns: Sequence[str], rows: List[Dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            f.write("\t".join(row[column] for column in columns) + "\n")


def write_splits(set_dir: str, columns: Sequence[str], rows: List[Dict[str, str]],
                 sizes: List[Tuple[str, int]]) -> None:
    """``set_dir/<split>.tsv`` for each (split, rows) in turn, from ``rows`` in order."""
    start = 0
    for split, count in sizes:
        write_tsv(os.path.join(set_dir, f"{split}.tsv"), columns, rows[start:start + count])
        start += count


def image_name(index: int) -> str:
    return f"images/{index:05d}.png"


def write_digits(out_dir: str, train: int = 1500, valid: int = 297, seed: int = 1,
                 test: int = 0) -> str:
    """Write ``out_dir/digits/{train,valid[,test]}.tsv`` (image, label_name) and the PNGs;
    return the set's directory."""
    # bundled with scikit-learn, no download; imported here because it is slow to import
    from sklearn.datasets import load_digits

    digits = load_digits()
    if min(train, valid, test) < 0 or train + valid + test > len(digits.images):
        raise ValueError(f"train + valid + test must be between 0 and "
                         f"{len(digits.images)} digit images; got {train} + {valid} + {test}")
    order = list(range(len(digits.images)))
    random.Random(f"digits:{seed}").shuffle(order)
    digits_dir = os.path.join(out_dir, "digits")
    os.makedirs(os.path.join(digits_dir, "images"), exist_ok=True)
    rows = []
    for index, source in enumerate(order[:train + valid + test]):
        pixels = np.rint(digits.images[source] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(digits_dir, image_name(index)))
        rows.append({"image": image_name(index), "label_name": DIGIT_WORDS[digits.target[source]]})
    write_splits(digits_dir, ["image", "label_name"], rows, split_sizes(train, valid, test))
    return digits_dir


def shape_mask(shape: str, left: int, top: int, size: int, canvas: int) -> Image.Image:
    """The shape's pixels (255) on an empty ``canvas``-sized mask, without antialiasing."""
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    right, bottom = left + size - 1, top + size - 1  # Pillow's drawing corners are inclusive
    if shape == "circle":
        draw.ellipse([left, top, right, bottom], fill=255)
    elif shape == "square":
        draw.rectangle([left, top, right, bottom], fill=255)
    else:
        draw.polygon([(left, bottom), (right, bottom), ((left + right) / 2, top)], fill=255)
    return mask


def boxes_apart(a: Box, b: Box, gap: int = SHAPE_GAP) -> bool:
    return (a[2] + gap <= b[0] or b[2] + gap <= a[0]
            or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def place_shapes(rng: random.Random, shapes: Sequence[str],
                 canvas: int) -> List[Tuple[Image.Image, Box]]:
    """Masks and exact boxes for ``shapes`` at random sizes and non-overlapping places."""
    low, high = (max(1, round(fraction * canvas)) for fraction in SHAPE_SIZE_RANGE)
    while True:  # rejection sampling: two shapes of at most 40% fit easily
        placed = []
        for shape in shapes:
            size = rng.randint(low, high)
            mask = shape_mask(shape, rng.randint(0, canvas - size), rng.randint(0, canvas - size),
                              size, canvas)
            placed.append((mask, mask.getbbox()))
        if all(boxes_apart(a[1], b[1]) for i, a in enumerate(placed) for b in placed[i + 1:]):
            return placed


def box_centre(box: Box) -> Tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def relation(box: Box, other: Box) -> str:
    """Where ``box`` lies relative to ``other``, along the axis where their centres differ most."""
    (x, y), (other_x, other_y) = box_centre(box), box_centre(other)
    if abs(y - other_y) > abs(x - other_x):
        return "above" if y < other_y else "below"
    return "left of" if x < other_x else "right of"


def background(noise: np.random.Generator, canvas: int) -> Image.Image:
    pixels = BACKGROUND_GREY + noise.integers(-BACKGROUND_NOISE, BACKGROUND_NOISE + 1,
                                              size=(canvas, canvas, 3))
    return Image.fromarray(pixels.astype(np.uint8))


def shapes_scene(rng: random.Random, noise: np.random.Generator,
                 canvas: int) -> Tuple[Image.Image, Dict[str, str]]:
    """One rendered scene of two shapes and its table row (without the image path)."""
    shapes, colours = rng.sample(SHAPE_TYPES, 2), rng.sample(sorted(SHAPE_COLOURS), 2)
    image = background(noise, canvas)
    boxes = []
    for (mask, box), colour in zip(place_shapes(rng, shapes, canvas), colours):
        image.paste(SHAPE_COLOURS[colour], mask=mask)
        boxes.append(box)
    names = [f"{colour} {shape}" for colour, shape in zip(colours, shapes)]
    first = rng.randrange(2)
    caption = f"a {names[first]} {relation(boxes[first], boxes[1 - first])} a {names[1 - first]}"
    asked, region = rng.randrange(2), rng.randrange(2)
    return image, {
        "caption": caption,
        "question": f"what colour is the {shapes[asked]}?",
        "answer": colours[asked],
        "region_text": names[region],
        "region": ",".join(str(v) for v in boxes[region]),
    }


def write_shapes(out_dir: str, train: int = 3000, valid: int = 300, seed: int = 1,
                 canvas: int = 64, test: int = 0) -> str:
    """Write ``out_dir/shapes/{train,valid[,test]}.tsv`` (one row per scene, columns
    ``SHAPES_COLUMNS``) and the PNGs; return the set's directory."""
    rng = random.Random(f"shapes:{seed}")
    noise = np.random.default_rng(rng.getrandbits(64))
    shapes_dir = os.path.join(out_dir, "shapes")
    os.makedirs(os.path.join(shapes_dir, "images"), exist_ok=True)
    rows = []
    for index in range(train + valid + test):
        image, row = shapes_scene(rng, noise, canvas)
        image.save(os.path.join(shapes_dir, image_name(index)))
        rows.append({"image": image_name(index), **row})
    write_splits(shapes_dir, SHAPES_COLUMNS, rows, split_sizes(train, valid, test))
    return shapes_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--valid", type=int, default=300)
    parser.add_argument("--test", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for name in TASKS:
        print(write_task(args.out_dir, name, args.train, args.valid, args.seed, args.test))
    print(write_digits(args.out_dir, seed=args.seed))
    print(write_shapes(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()
