"""ExampleBuilder on IMAGE and BOX slots: a row's image and boxes read, moved together
and quantized, and bad cells reported as DataError located by file, line and column."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ofasys_fairseq.data.example_builder import ExampleBuilder
from ofasys_fairseq.data.table import DataError
from ofasys_fairseq.data.vocabulary import Vocabulary, train_sentencepiece
from ofasys_fairseq.modalities import get_modality
from ofasys_fairseq.modalities.box import bin_symbol, quantize
from ofasys_fairseq.modalities.image.adapter import ImageGeometry
from ofasys_fairseq.plan import TaskPlan

GEOMETRY = ImageGeometry(64, 16)
NUM_BINS = 100
VOCAB = Vocabulary(train_sentencepiece(["the red box which region does the text describe"], 60),
                   [bin_symbol(k) for k in range(NUM_BINS)])
FIRST_BIN = VOCAB.dictionary.index(bin_symbol(0))
DATA_FILE = "data/train.jsonl"
LINE = 7
GROUNDING = '[IMAGE:img{attrs}] which region does the text " [TEXT:t] " describe? -> [BOX:b]'
WIDTH, HEIGHT = 96, 48
BOX = [24.0, 9.0, 72.0, 39.0]  # no coordinate falls on a tie between two bins
RED = (220, 20, 20)


def template(attrs: str = ""):
    return TaskPlan.parse(GROUNDING.format(attrs=attrs)).templates[0]


def reader(base_dir, train=False, with_target=True, adaptor="resnet", geometry=GEOMETRY):
    """An ExampleBuilder for GROUNDING rows of a data file in ``base_dir``."""
    settings = {"IMAGE": {"image_size": geometry.image_size,
                          "vit_patch_size": geometry.vit_patch_size, "image_adaptor": adaptor},
                "BOX": {"num_bins": NUM_BINS}}
    return ExampleBuilder(TaskPlan.parse(GROUNDING.format(attrs="")), VOCAB, settings, None,
                          DATA_FILE, str(base_dir), train, with_target)


def image_of(example):
    """The (adapter, pixels) of the example's one image slot."""
    (feature,) = example.features
    assert feature.slot == 0 and feature.modality == "IMAGE"
    return feature.adapter, feature.values


def bins(example):
    """The target's location tokens as bins."""
    return [t - FIRST_BIN for t in example.target]


@pytest.fixture
def images(tmp_path):
    """A white 96x48 image with a red rectangle at BOX, a corrupt file, and base64."""
    array = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    x0, y0, x1, y1 = (int(c) for c in BOX)
    array[y0:y1, x0:x1] = RED
    (tmp_path / "img").mkdir()
    Image.fromarray(array).save(tmp_path / "img" / "scene.png")
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 5)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"path": "img/scene.png", "base64": base64.b64encode(buffer.getvalue()).decode(),
            "corrupt": "img/corrupt.jpg"}


def row(image, box="24,9,72,39", text="the red box"):
    cells = {"img": image, "t": text}
    if box is not None:
        cells["b"] = box
    return cells


def expected_bins(box=BOX):
    resized = [c * GEOMETRY.image_size / side for c, side in zip(box, (WIDTH, HEIGHT) * 2)]
    return quantize(resized, GEOMETRY.image_size, NUM_BINS)


# --- build ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["path", "base64"])
def test_read_grounding_row(tmp_path, images, source):
    plan = template()
    out = reader(tmp_path).build(row(images[source]), plan, LINE)
    adapter, pixels = image_of(out)
    assert adapter == "image_resnet"
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.uint8
    assert out.reference == BOX  # the target as read: pixels of the original image
    assert bins(out) == expected_bins()
    assert out.target_input == out.target
    assert out.output_context == (WIDTH, HEIGHT)
    # the bins point at the red pixels
    x0, y0, x1, y1 = (k / (NUM_BINS - 1) * 64 for k in bins(out))
    red = (pixels.permute(1, 2, 0).int() - torch.tensor(RED)).abs().max(-1).values < 60
    inside = red[round(y0) + 1:round(y1) - 1, round(x0) + 1:round(x1) - 1]
    assert inside.all() and red.sum() <= (x1 - x0 + 2) * (y1 - y0 + 2)


def test_vit_adaptor_slot(tmp_path, images):
    out = reader(tmp_path).build(row(images["path"]), template(",adaptor=vit"), LINE)
    adapter, pixels = image_of(out)
    assert adapter == "image_vit" and pixels.shape == (3, 64, 64)
    # and the run's default adaptor applies to slots without adaptor=
    out = reader(tmp_path, adaptor="vit").build(row(images["path"]), template(), LINE)
    assert image_of(out)[0] == "image_vit"


def test_slot_size_sets_the_image_its_boxes_and_its_positions(tmp_path, images):
    plan = template(",size=32")
    builder = reader(tmp_path)  # the run's default: 64 px
    out = builder.build(row(images["path"]), plan, LINE)
    assert image_of(out)[1].shape == (3, 32, 32)
    assert bins(out) == expected_bins()  # fractions of the image: the same bins
    assert builder.shape(builder.read(row(images["path"]), plan, LINE, False),
                         plan).features == [(32 // 16) ** 2]


def test_slot_size_is_checked_against_the_patch_size():
    settings = {"image_size": 64, "vit_patch_size": 16, "image_adaptor": "resnet"}
    (slot,) = TaskPlan.parse("[IMAGE:img,size=40] -> [TEXT:t]").templates[0].feature_slots
    with pytest.raises(ValueError, match=r"\[IMAGE:img,size=40\]: size=40 must be a multiple "
                                         r"of the resnet patch size 16"):
        get_modality("IMAGE").plan_settings(settings, [slot])


def test_json_list_box_and_absolute_path(tmp_path, images):
    out = reader("/nonexistent").build(
        row(str(tmp_path / images["path"]), box="[24, 9, 72, 39]"), template(), LINE)
    assert bins(out) == expected_bins()


def test_without_target_the_box_column_is_not_needed(tmp_path, images):
    plan = template()
    out = reader(tmp_path, with_target=False).build(row(images["path"], box=None), plan, LINE)
    assert image_of(out)[1].shape == (3, 64, 64)
    assert out.target is None and out.reference is None
    assert out.output_context == (WIDTH, HEIGHT)  # what a decoded box is mapped back with
    # not even a bad one is looked at
    out = reader(tmp_path, with_target=False).build(row(images["path"], box="1,2,3"), plan, LINE)
    assert out.target is None


def test_template_without_images():
    plan = TaskPlan.parse("[TEXT:src] -> [TEXT:tgt]")
    builder = ExampleBuilder(plan, VOCAB, {}, None, DATA_FILE, "/tmp")
    out = builder.build({"src": "the box", "tgt": "red"}, plan.templates[0], LINE)
    assert out.features == () and out.output_context is None


def test_eval_read_is_deterministic_and_training_follows_the_seed(tmp_path, images):
    plan = template(",preprocess=grounding")
    evaluation = reader(tmp_path)
    a = evaluation.build(row(images["path"]), plan, LINE, seed=1)
    b = evaluation.build(row(images["path"]), plan, LINE, seed=2)
    assert torch.equal(image_of(a)[1], image_of(b)[1])
    assert bins(a) == bins(b) == expected_bins()
    training = reader(tmp_path, train=True)
    runs = [training.build(row(images["path"]), plan, LINE, seed=s) for s in (5, 5, 6, 7, 8)]
    assert torch.equal(image_of(runs[0])[1], image_of(runs[1])[1])
    assert bins(runs[0]) == bins(runs[1])
    assert len({tuple(bins(r)) for r in runs}) > 1
    # the seed does not disturb the global generator
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    training.build(row(images["path"]), plan, LINE, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_mask_ratio_slot(tmp_path, images):
    plain = reader(tmp_path).build(row(images["path"]), template(), LINE)
    masked = reader(tmp_path).build(row(images["path"]), template(",mask_ratio=0.25"), LINE)
    changed = (image_of(plain)[1] != image_of(masked)[1]).any(0)
    assert 0 < changed.sum() <= 32 * 32 and not changed[:16].any() and not changed[48:].any()


# --- errors -----------------------------------------------------------------------------------


def assert_located(info, column, *phrases):
    error = info.value
    assert isinstance(error, DataError)
    assert (error.path, error.line, error.column) == (DATA_FILE, LINE, column)
    assert str(error).startswith(f"{DATA_FILE}, line {LINE}, column '{column}': ")
    for phrase in phrases:
        assert phrase in str(error), (phrase, str(error))


def test_missing_image_file(tmp_path, images):
    with pytest.raises(DataError) as info:
        reader(tmp_path).build(row("img/missing.png"), template(), LINE)
    assert_located(info, "img", "no such image file", str(tmp_path / "img" / "missing.png"))


def test_corrupt_image(tmp_path, images):
    with pytest.raises(DataError) as info:
        reader(tmp_path).build(row(images["corrupt"]), template(), LINE)
    assert_located(info, "img", "cannot decode", "corrupt.jpg")


@pytest.mark.parametrize("box", ["24,8,100,40", "24,8,72,49", "-1,8,72,40"])
def test_box_outside_the_image(tmp_path, images, box):
    with pytest.raises(DataError) as info:
        reader(tmp_path).build(row(images["path"], box=box), template(), LINE)
    assert_located(info, "b", f"outside the {WIDTH}x{HEIGHT} image")


@pytest.mark.parametrize("box", ["24,8,72", "24,8,72,40,1", "[1, 2]"])
def test_wrong_number_of_coordinates(tmp_path, images, box):
    with pytest.raises(DataError) as info:
        reader(tmp_path).build(row(images["path"], box=box), template(), LINE)
    assert_located(info, "b", "expected 4 coordinates")


@pytest.mark.parametrize("cells,column,phrase", [
    ({"t": "x", "b": "1,2,3,4"}, "img", "missing column 'img'"),
    ({"img": "", "t": "x", "b": "1,2,3,4"}, "img", "expected an image path"),
    ({"img": 3, "t": "x", "b": "1,2,3,4"}, "img", "expected an image path"),
    ({"img": "img/scene.png", "t": "x"}, "b", "missing column 'b'"),
    ({"img": "img/scene.png", "t": "x", "b": "9,2,3,4"}, "b", "x0 < x1"),
])
def test_missing_or_empty_cells(tmp_path, images, cells, column, phrase):
    with pytest.raises(DataError) as info:
        reader(tmp_path).build(cells, template(), LINE)
    assert_located(info, column, phrase)


def test_line_none_is_allowed(tmp_path, images):
    with pytest.raises(DataError) as info:
        reader(tmp_path).build(row("img/missing.png"), template(), None)
    assert info.value.line is None and info.value.column == "img"


# --- read: the scan of a whole file --------------------------------------------------------------


def checked(builder: ExampleBuilder, cells, plan, decode: bool):
    """The dataset's scan: every cell read (images decoded only when validating), boxes
    checked against decoded images."""
    return builder.read(cells, plan, LINE, decode)


def test_check_with_decode_finds_corrupt_images_and_boxes_outside(tmp_path, images):
    plan = template()
    values = checked(reader(tmp_path), row(images["path"]), plan, decode=True)
    assert values[plan.feature_slots[0]].original_size == (WIDTH, HEIGHT)
    assert values[plan.target] == BOX
    assert reader(tmp_path).shape(values, plan).decoder == 4 + 1  # four bins, then </s>
    with pytest.raises(DataError) as info:
        checked(reader(tmp_path), row(images["corrupt"]), plan, decode=True)
    assert_located(info, "img", "cannot decode")
    with pytest.raises(DataError) as info:
        checked(reader(tmp_path), row(images["path"], box="0,0,97,10"), plan, decode=True)
    assert_located(info, "b", "outside")
    with pytest.raises(DataError) as info:
        checked(reader(tmp_path), row("img/missing.png"), plan, decode=True)
    assert_located(info, "img", "no such image file")


def test_check_without_decode_only_parses_boxes(tmp_path, images):
    plan = template()
    values = checked(reader(tmp_path), row(images["corrupt"]), plan, decode=False)
    assert values[plan.target] == BOX
    assert values[plan.feature_slots[0]] == images["corrupt"]  # the cell, not decoded
    # a box outside the image cannot be seen without decoding it
    checked(reader(tmp_path), row(images["path"], box="0,0,970,10"), plan, decode=False)
    with pytest.raises(DataError) as info:
        checked(reader(tmp_path), row(images["corrupt"], box="1,2,3"), plan, decode=False)
    assert_located(info, "b", "expected 4 coordinates")


def test_check_without_target(tmp_path, images):
    plan = template()
    values = checked(reader(tmp_path, with_target=False), row(images["path"], box=None), plan,
                     decode=True)
    assert plan.target not in values
    assert values[plan.feature_slots[0]].original_size == (WIDTH, HEIGHT)


def test_num_patches(tmp_path, images):
    def patches(builder, plan):
        return builder.shape(builder.read(row(images["path"]), plan, LINE, False), plan).features

    assert patches(reader(tmp_path), template()) == [16]
    assert patches(reader(tmp_path), template(",adaptor=vit")) == [16]
    assert patches(reader(tmp_path, adaptor="vit", geometry=ImageGeometry(64, 8)),
                   template()) == [64]
