"""BOX slots: parsing, the inside check, and quantizing into location bins (OFA's
``round(x / side * (num_bins - 1))``), including round trips through the real resize
and horizontal flip."""
import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ofasys_fairseq.data.vocabulary import Vocabulary, train_sentencepiece
from ofasys_fairseq.modalities import Context
from ofasys_fairseq.modalities.box.modality import (BOX_LENGTH, BoxConstraint, BoxModality,
                                                    bin_symbol, check_box_inside, dequantize,
                                                    format_box, parse_box, quantize)
from ofasys_fairseq.modalities.image.preprocess import _resize
from tests.helpers import allowed_in_one_batch, allowed_tokens


def box_context(num_bins: int) -> Context:
    vocab = Vocabulary(train_sentencepiece(["a box"], 20), [bin_symbol(k) for k in range(num_bins)])
    return Context(vocab, {"num_bins": num_bins})


# --- parse_box -----------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("1,2,30,40", [1, 2, 30, 40]),
    (" 1.5 , 2 ,30.25,  40 ", [1.5, 2, 30.25, 40]),
    ("\t0,0,1e2,5\n", [0, 0, 100, 5]),
    ("[1, 2, 30, 40]", [1, 2, 30, 40]),
    (" [1.5,2,30,40.5] ", [1.5, 2, 30, 40.5]),
    ('["1", "2", "30", "40"]', [1, 2, 30, 40]),
    ([1, 2, 30, 40], [1, 2, 30, 40]),
    ((0.0, 0.5, 1.5, 2.0), [0, 0.5, 1.5, 2]),
    (["1", " 2", "30 ", "40"], [1, 2, 30, 40]),
    (np.array([1, 2, 30, 40]).tolist(), [1, 2, 30, 40]),
    ([np.float32(1), np.int64(2), 30, 40], [1, 2, 30, 40]),
])
def test_parse_box_accepts(value, expected):
    box = parse_box(value)
    assert box == expected
    assert all(type(c) is float for c in box)


@pytest.mark.parametrize("value", ["1,2,3", "[1, 2, 3]", [1, 2, 3], "1,2,3,4,5",
                                   "[1, 2, 3, 4, 5]", (1, 2, 3, 4, 5), [], ""])
def test_parse_box_rejects_wrong_number_of_coordinates(value):
    with pytest.raises(ValueError, match="expected 4 coordinates x0,y0,x1,y1, got"):
        parse_box(value)


@pytest.mark.parametrize("value,name", [
    ("a,2,3,4", "x0"), ("1,two,3,4", "y0"), ("1,2,,4", "x1"), ("1,2,3,4px", "y1"),
    ([1, None, 3, 4], "y0"), ([1, 2, [3], 4], "x1"), ('[1, 2, 3, "x"]', "y1"),
])
def test_parse_box_rejects_non_numbers(value, name):
    with pytest.raises(ValueError, match=f"{name} is not a finite number"):
        parse_box(value)


@pytest.mark.parametrize("value,name", [
    ("nan,2,3,4", "x0"), ("1,inf,3,4", "y0"), ("1,2,-inf,4", "x1"), ("[1, 2, 3, NaN]", "y1"),
    ("[1, 2, Infinity, 4]", "x1"), ([1, 2, 3, math.inf], "y1"), ([math.nan, 2, 3, 4], "x0"),
])
def test_parse_box_rejects_nan_and_infinity(value, name):
    with pytest.raises(ValueError, match=f"{name} is not a finite number"):
        parse_box(value)


@pytest.mark.parametrize("value,name", [([True, 2, 3, 4], "x0"), ([0, 0, 3, False], "y1"),
                                        ("[0, true, 3, 4]", "y0")])
def test_parse_box_rejects_booleans(value, name):
    with pytest.raises(ValueError, match=f"{name} is not a finite number"):
        parse_box(value)


@pytest.mark.parametrize("value", ["10,2,5,4", "1,8,3,4", "1,2,1,4", "1,2,3,2", [5, 5, 5, 5]])
def test_parse_box_rejects_inverted_or_empty_boxes(value):
    with pytest.raises(ValueError, match="expected x0 < x1 and y0 < y1, got"):
        parse_box(value)


def test_parse_box_inverted_message_shows_the_box():
    with pytest.raises(ValueError) as info:
        parse_box("10,2,5.5,4")
    assert "10,2,5.5,4" in str(info.value)


@pytest.mark.parametrize("value", [None, 7, 3.5, {"x0": 1}, b"1,2,3,4"])
def test_parse_box_rejects_other_types(value):
    with pytest.raises(ValueError, match="expected 'x0,y0,x1,y1' or a list of four numbers"):
        parse_box(value)


def test_parse_box_rejects_broken_json():
    with pytest.raises(ValueError, match="expected 'x0,y0,x1,y1' or a JSON list"):
        parse_box("[1, 2, 3, 4")
    with pytest.raises(ValueError, match="got 1"):
        parse_box('["1,2,3,4"]')  # a JSON list holding one string


# --- check_box_inside ---------------------------------------------------------------------


@pytest.mark.parametrize("box", [[0, 0, 10, 8], [0.5, 0.5, 9.5, 7.5], [3, 2, 4, 3]])
def test_check_box_inside_accepts_boxes_within_the_image(box):
    check_box_inside(box, (10, 8))


@pytest.mark.parametrize("box", [[-1, 0, 5, 5], [0, -0.5, 5, 5], [0, 0, 10.5, 5], [0, 0, 5, 8.01],
                                 [2, 2, 11, 9]])
def test_check_box_inside_rejects_boxes_outside(box):
    with pytest.raises(ValueError, match="outside the 10x8 image") as info:
        check_box_inside(box, (10, 8))
    assert format_box(box) in str(info.value)


def test_check_box_inside_uses_width_for_x_and_height_for_y():
    check_box_inside([0, 0, 30, 10], (30, 10))
    with pytest.raises(ValueError):
        check_box_inside([0, 0, 30, 10], (10, 30))


# --- quantize / dequantize -------------------------------------------------------------------


def test_quantize_is_ofa_rounding_and_clamps():
    assert quantize([0, 16, 32, 64], 64, 1000) == [0, round(16 / 64 * 999), round(32 / 64 * 999),
                                                   999]
    assert quantize([-3, 0, 70, 64], 64, 100) == [0, 0, 99, 99]  # clamped to valid bins
    bins = quantize([1.2, 3.7, 10.0, 20.5], 32, 1000)
    assert len(bins) == BOX_LENGTH and all(type(k) is int for k in bins)
    assert dequantize([0, 999], 1000) == [0.0, 1.0]


def test_dequantize_inverts_quantize_on_bin_centres():
    num_bins, side = 101, 50
    bins = [0, 10, 55, 100]
    box = [k / (num_bins - 1) * side for k in bins]
    assert quantize(box, side, num_bins) == bins
    assert dequantize(bins, num_bins) == pytest.approx([c / side for c in box])


def random_boxes(rng, count, width, height):
    x = np.sort(rng.uniform(0, width, (count, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, (count, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def transformed(transform, boxes, width, height):
    moved = transform(tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32),
                                               format="XYXY", canvas_size=(height, width)))
    return moved.as_subclass(torch.Tensor).tolist()


def half_bin(width, height, num_bins):
    """Half a bin in pixels of the original image, per coordinate."""
    x, y = width / (num_bins - 1) / 2, height / (num_bins - 1) / 2
    return np.array([x, y, x, y])


FLOAT_SLACK = 1e-3  # pixels: boxes move through the transforms as float32


@pytest.mark.parametrize("width,height,side,num_bins", [
    (640, 480, 64, 1000), (333, 517, 48, 100), (64, 64, 64, 50), (1024, 200, 32, 1000),
])
def test_round_trip_through_resize_is_within_half_a_bin(width, height, side, num_bins):
    rng = np.random.default_rng(width + height)
    boxes = random_boxes(rng, 200, width, height)
    resized = transformed(_resize(side), boxes, width, height)
    tolerance = half_bin(width, height, num_bins) + FLOAT_SLACK
    for box, moved in zip(boxes, resized):
        assert moved == pytest.approx(box * ([side / width, side / height] * 2), abs=1e-4)
        back = np.array(dequantize(quantize(moved, side, num_bins), num_bins)) \
            * [width, height, width, height]
        assert (np.abs(back - box) <= tolerance).all(), (box, back, tolerance)


def test_round_trip_error_really_reaches_half_a_bin():
    # the tolerance is tight: a finer check would fail
    width, height, side, num_bins = 640, 480, 64, 100
    boxes = random_boxes(np.random.default_rng(0), 500, width, height)
    resized = transformed(_resize(side), boxes, width, height)
    errors = [np.abs(np.array(dequantize(quantize(m, side, num_bins), num_bins))
                     * ([width, height] * 2) - b) for b, m in zip(boxes, resized)]
    worst = np.max(errors, axis=0)
    assert (worst > 0.9 * half_bin(width, height, num_bins)).all()


@pytest.mark.parametrize("width,height,side,num_bins", [(640, 480, 64, 1000), (300, 700, 32, 77)])
def test_round_trip_through_flip_and_resize(width, height, side, num_bins):
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 200, width, height)
    flip_resize = v2.Compose([v2.RandomHorizontalFlip(p=1.0), _resize(side)])
    moved_boxes = transformed(flip_resize, boxes, width, height)
    tolerance = half_bin(width, height, num_bins) + FLOAT_SLACK
    for box, moved in zip(boxes, moved_boxes):
        # the flip mirrors x: x0' = W - x1, x1' = W - x0
        assert moved == pytest.approx([(width - box[2]) * side / width, box[1] * side / height,
                                       (width - box[0]) * side / width, box[3] * side / height],
                                      abs=1e-4)
        fx0, y0, fx1, y1 = dequantize(quantize(moved, side, num_bins), num_bins)
        back = np.array([(1 - fx1) * width, y0 * height, (1 - fx0) * width, y1 * height])
        assert (np.abs(back - box) <= tolerance).all(), (box, back, tolerance)


# --- decoding a box target ----------------------------------------------------------


def test_box_constraint_allows_exactly_four_increasing_bins_then_eos():
    first, num_bins, eos = 10, 8, 2
    constraint = BoxConstraint(first, num_bins, eos)
    every_bin = list(range(first, first + num_bins))

    def allowed(generated):
        return allowed_tokens(constraint, generated, 32)
    assert allowed([]) == every_bin  # x0: any bin
    assert allowed([first + 3]) == every_bin  # y0: any bin
    assert allowed([first + 3, first + 5]) == list(range(first + 4, first + 8))  # x1 > x0
    assert allowed([first + 3, first + 5, first + 6]) == [first + 6, first + 7]  # y1 > y0
    assert allowed([first + 3, first + 5, first + 6, first + 7]) == [eos]
    # x0 on the last bin: x1 can only repeat it (an empty box rather than no box at all)
    assert allowed([first + 7, first]) == [first + 7]
    # beam search asks for all hypotheses at once, each at its own length
    hypotheses = [[], [first + 3], [first + 3, first + 5], [first + 3, first + 5, first + 6],
                  [first + 3, first + 5, first + 6, first + 7], [first + 7, first]]
    assert allowed_in_one_batch(constraint, hypotheses, 32) == [allowed(h) for h in hypotheses]


def test_box_postprocess_needs_exactly_four_location_tokens():
    box = BoxModality()
    context = box_context(num_bins=11)
    first = context.vocab.dictionary.index(bin_symbol(0))
    tokens = [first + k for k in (1, 2, 6, 10)]
    assert box.postprocess(tokens, None, context, (200, 100)) == pytest.approx(
        [20.0, 20.0, 120.0, 100.0])  # bins over (width, height): pixels of the original
    assert box.postprocess(tokens[:3], None, context, (200, 100)) is None
    assert box.postprocess(tokens + [first], None, context, (200, 100)) is None
    assert box.postprocess([4] + tokens[1:], None, context, (200, 100)) is None  # not a bin
