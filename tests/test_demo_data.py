"""The generated vision sets of ``scripts/demo_data.py``, checked against the PNGs they wrote."""
import os
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import demo_data
import demo_tables
from ofasys_fairseq.instruction import Instruction

CAPTION = re.compile(r"a (\w+) (\w+) (above|below|left of|right of) a (\w+) (\w+)")
# Painted share of a shape's box: tells the three shape types apart.
FILL_RANGE = {"square": (1.0, 1.0), "circle": (0.7, 0.85), "triangle": (0.45, 0.6)}


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    header, *rows = [line.split("\t") for line in lines[:-1]]
    assert all(len(row) == len(header) for row in rows)
    return header, [dict(zip(header, row)) for row in rows]


def read_dir(directory):
    """Every file under ``directory``, by relative path, as bytes."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = f.read()
    return files


def colour_box(pixels, rgb):
    """Tight box (x1, y1 exclusive) and pixel count of the pixels exactly of colour ``rgb``."""
    ys, xs = np.nonzero(np.all(pixels == rgb, axis=-1))
    assert len(xs), f"no pixel of colour {rgb}"
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), len(xs)


def centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def expected_relation(box, other):
    (x, y), (other_x, other_y) = centre(box), centre(other)
    if abs(y - other_y) > abs(x - other_x):
        return "above" if y < other_y else "below"
    return "left of" if x < other_x else "right of"


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return demo_data.write_shapes(str(tmp_path_factory.mktemp("data")), train=60, valid=20, seed=3)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return demo_data.write_digits(str(tmp_path_factory.mktemp("data")), train=40, valid=15, seed=3)


def shapes_rows(shapes_dir):
    return [row for split in ("train", "valid")
            for row in read_tsv(os.path.join(shapes_dir, f"{split}.tsv"))[1]]


def test_shapes_files_and_columns(shapes_dir):
    assert os.path.basename(shapes_dir) == "shapes"
    columns = ["image", "caption", "question", "answer", "region_text", "region"]
    names = set()
    for split, count in (("train", 60), ("valid", 20)):
        header, rows = read_tsv(os.path.join(shapes_dir, f"{split}.tsv"))
        assert header == columns
        assert len(rows) == count
        for row in rows:
            assert re.fullmatch(r"images/\d{5}\.png", row["image"])
            with Image.open(os.path.join(shapes_dir, row["image"])) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))
            names.add(row["image"])
    assert len(names) == 80
    assert sorted(os.listdir(os.path.join(shapes_dir, "images"))) == sorted(
        os.path.basename(name) for name in names)


def test_shapes_boxes_captions_and_answers_match_the_pixels(shapes_dir):
    low, high = round(0.22 * 64), round(0.40 * 64)
    for row in shapes_rows(shapes_dir):
        pixels = np.asarray(Image.open(os.path.join(shapes_dir, row["image"])).convert("RGB"))
        first_colour, first_shape, relation, second_colour, second_shape = \
            CAPTION.fullmatch(row["caption"]).groups()
        assert first_shape != second_shape and first_colour != second_colour
        colour_of = {first_shape: first_colour, second_shape: second_colour}
        boxes = {}
        for shape, colour in colour_of.items():
            box, painted = colour_box(pixels, demo_data.SHAPE_COLOURS[colour])
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert low <= x1 - x0 <= high and low <= y1 - y0 <= high
            fill_low, fill_high = FILL_RANGE[shape]
            assert fill_low <= painted / ((x1 - x0) * (y1 - y0)) <= fill_high, shape
            boxes[shape] = box

        # only the background and the two shapes' colours are in the picture
        other_colours = set(demo_data.SHAPE_COLOURS) - set(colour_of.values())
        for colour in other_colours:
            assert not np.all(pixels == demo_data.SHAPE_COLOURS[colour], axis=-1).any()
        first, second = boxes[first_shape], boxes[second_shape]
        assert (first[2] + 2 <= second[0] or second[2] + 2 <= first[0]
                or first[3] + 2 <= second[1] or second[3] + 2 <= first[1]), "shapes overlap"
        assert relation == expected_relation(first, second)

        asked_shape = re.fullmatch(r"what colour is the (\w+)\?", row["question"]).group(1)
        assert row["answer"] == colour_of[asked_shape]

        region_colour, region_shape = row["region_text"].split(" ")
        assert colour_of[region_shape] == region_colour
        assert tuple(int(v) for v in row["region"].split(",")) == boxes[region_shape]


def test_shapes_random_choices_vary(shapes_dir):
    rows = shapes_rows(shapes_dir)
    assert {CAPTION.fullmatch(row["caption"]).group(3) for row in rows} == {
        "above", "below", "left of", "right of"}
    assert {row["answer"] for row in rows} == set(demo_data.SHAPE_COLOURS)
    region_names = {row["region_text"].split(" ")[1] for row in rows}
    assert region_names == set(demo_data.SHAPE_TYPES)
    # the region is not always the shape asked about, nor the one named first
    assert any(row["question"].split(" ")[-1][:-1] != row["region_text"].split(" ")[1] for row in rows)
    assert any(not row["caption"].startswith(f"a {row['region_text']} ") for row in rows)


def test_shapes_canvas_size(tmp_path):
    shapes_dir = demo_data.write_shapes(str(tmp_path), train=5, valid=2, seed=1, canvas=100)
    for row in shapes_rows(shapes_dir):
        with Image.open(os.path.join(shapes_dir, row["image"])) as image:
            assert image.size == (100, 100)
        x0, y0, x1, y1 = (int(v) for v in row["region"].split(","))
        assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100 and x1 - x0 >= 22


@pytest.mark.parametrize("write", [
    lambda out, seed: demo_data.write_shapes(out, train=8, valid=3, seed=seed),
    lambda out, seed: demo_data.write_digits(out, train=8, valid=3, seed=seed),
], ids=["shapes", "digits"])
def test_same_seed_same_files_other_seed_other_files(tmp_path, write):
    first = read_dir(write(str(tmp_path / "a"), 5))
    again = read_dir(write(str(tmp_path / "b"), 5))
    other = read_dir(write(str(tmp_path / "c"), 6))
    assert first == again
    assert first.keys() == other.keys()
    assert first["train.tsv"] != other["train.tsv"]
    assert all(first[name] != other[name] for name in first if name.startswith("images"))


@pytest.mark.parametrize("write", [
    lambda out, test: demo_data.write_shapes(out, train=8, valid=3, test=test),
    lambda out, test: demo_data.write_digits(out, train=8, valid=3, test=test),
    lambda out, test: demo_data.write_task(out, "nli", 8, 3, 1, test=test),
    lambda out, test: demo_tables.write_table_task(out, "table_qa", train=8, valid=3,
                                                   test=test),
], ids=["shapes", "digits", "text", "tables"])
def test_a_test_split_is_drawn_after_the_others_and_leaves_them_as_they_were(tmp_path, write):
    without = read_dir(write(str(tmp_path / "a"), 0))
    with_test = read_dir(write(str(tmp_path / "b"), 4))
    test_file, = [name for name in with_test if name.startswith("test.")]
    assert not any(name.startswith("test.") for name in without)
    assert {k: v for k, v in with_test.items() if k in without} == without
    rows = with_test[test_file].splitlines()
    assert len(rows) - test_file.endswith(".tsv") == 4  # a header line in TSV
    train = with_test[test_file.replace("test.", "train.")].splitlines()
    assert not set(rows[test_file.endswith(".tsv"):]) & set(train)


def test_digits_files_and_labels_match_sklearn(digits_dir):
    assert os.path.basename(digits_dir) == "digits"
    digits = load_digits()
    flat_images = digits.images.reshape(len(digits.images), -1)
    sources = []
    for split, count in (("train", 40), ("valid", 15)):
        header, rows = read_tsv(os.path.join(digits_dir, f"{split}.tsv"))
        assert header == ["image", "label_name"]
        assert len(rows) == count
        for row in rows:
            assert re.fullmatch(r"images/\d{5}\.png", row["image"])
            with Image.open(os.path.join(digits_dir, row["image"])) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "L", (8, 8))
                pixels = np.asarray(image)
            assert pixels.max() <= 255 and pixels.max() > 200  # 0..16 stretched to 0..255
            values = np.rint(pixels.astype(float) * 16 / 255).reshape(-1)
            (matches,) = np.nonzero(np.all(flat_images == values, axis=1))
            assert len(matches) == 1  # sklearn's 1797 digit images are all different
            sources.append(int(matches[0]))
            assert row["label_name"] == demo_data.DIGIT_WORDS[digits.target[matches[0]]]
    assert len(set(sources)) == len(sources)
    assert sources != sorted(sources), "shuffled"


def test_digits_too_many_rows_raise(tmp_path):
    with pytest.raises(ValueError, match="1797"):
        demo_data.write_digits(str(tmp_path), train=1700, valid=98)
    with pytest.raises(ValueError, match=r"got 1500 \+ 148 \+ 150"):
        demo_data.write_digits(str(tmp_path), train=1500, valid=148, test=150)
    with pytest.raises(ValueError):
        demo_data.write_digits(str(tmp_path), train=-1, valid=10)


@pytest.mark.parametrize("instruction, header", [
    (demo_data.DIGITS_INSTRUCTION, ["image", "label_name"]),
    (demo_data.SHAPES_CAPTION_INSTRUCTION, demo_data.SHAPES_COLUMNS),
    (demo_data.SHAPES_VQA_INSTRUCTION, demo_data.SHAPES_COLUMNS),
    (demo_data.SHAPES_GROUNDING_INSTRUCTION, demo_data.SHAPES_COLUMNS),
    (demo_data.SHAPES_GROUNDED_CAPTION_INSTRUCTION, demo_data.SHAPES_COLUMNS),
])
def test_instructions_parse_and_read_written_columns(instruction, header):
    slots = Instruction.parse(instruction).slots
    assert slots and all(slot.column in header for slot in slots)
