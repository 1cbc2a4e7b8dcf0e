"""IMAGE slot preprocessing: decoding every kind of cell, EXIF orientation, errors,
the augmentation recipes, the centre mask, and boxes moving with their image."""
import base64
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from ofasys_fairseq.modalities.image.decode import DecodedImage, decode_image
from ofasys_fairseq.modalities.image.preprocess import (IMAGE_RECIPES, IMAGENET_MEAN,
                                                        CropKeepingBoxes, ImagePreprocessor,
                                                        _resize)

SIZE = 32  # output side of the preprocessors
BACKGROUND = (255, 255, 255)
RED = (220, 20, 20)
BLUE = (20, 20, 220)


def noise_image(width: int = 24, height: int = 16, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def scene(width: int, height: int, box, colours=(RED,)) -> Image.Image:
    """A plain background with the box filled by vertical bands of ``colours``
    (left to right)."""
    image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    x0, y0, x1, y1 = box
    edges = np.linspace(x0, x1, len(colours) + 1).round().astype(int)
    for colour, left, right in zip(colours, edges[:-1], edges[1:]):
        image[y0:y1, left:right] = colour
    return Image.fromarray(image)


def colour_bbox(out: torch.Tensor, colour, threshold: float = None):
    """``x0,y0,x1,y1`` of the pixels of ``out`` (3 x H x W uint8) closer to ``colour``
    than halfway from the background (resizing blurs the edges)."""
    target = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
    if threshold is None:
        threshold = float(np.linalg.norm(np.subtract(colour, BACKGROUND))) / 2
    close = (out.float() - target).norm(dim=0) < threshold
    rows, columns = close.any(1).nonzero(), close.any(0).nonzero()
    assert len(rows) and len(columns), f"no {colour} pixels in the output"
    return [columns.min().item(), rows.min().item(), columns.max().item() + 1,
            rows.max().item() + 1]


def assert_box_close(actual, expected, tolerance: float = 1.5):
    assert len(actual) == 4
    assert max(abs(a - e) for a, e in zip(actual, expected)) <= tolerance, (actual, expected)


# --- decode_image: sources ----------------------------------------------------------


@pytest.fixture
def png(tmp_path):
    image = noise_image()
    data = encoded(image, "PNG")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(data)
    return image, data


def test_every_source_decodes_to_the_same_pixels(tmp_path, png):
    image, data = png
    b64 = base64.b64encode(data).decode()
    elsewhere = str(tmp_path / "elsewhere")
    os.mkdir(elsewhere)
    sources = {
        "relative path": ("images/a.png", str(tmp_path)),
        "absolute path": (str(tmp_path / "images" / "a.png"), elsewhere),
        "base64": (b64, elsewhere),
        "data URI": ("data:image/png;base64," + b64, elsewhere),
    }
    for name, (cell, base_dir) in sources.items():
        decoded = decode_image(cell, base_dir)
        assert isinstance(decoded, DecodedImage), name
        assert decoded.image.mode == "RGB", name
        assert decoded.original_size == (24, 16), name
        assert np.array_equal(pixels(decoded.image), pixels(image)), name


def test_relative_paths_resolve_against_base_dir_not_the_working_directory(tmp_path, png,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path / "images")  # "a.png" exists here, but not in base_dir
    with pytest.raises(ValueError, match="no such image file"):
        decode_image("a.png", str(tmp_path))
    assert decode_image("a.png", str(tmp_path / "images")).original_size == (24, 16)


def test_jpeg_sources_agree(tmp_path):
    data = encoded(noise_image(40, 30, seed=3), "JPEG", quality=90)
    (tmp_path / "a.jpg").write_bytes(data)
    from_file = decode_image("a.jpg", str(tmp_path))
    b64 = base64.b64encode(data).decode()
    for cell in (b64, "data:image/jpeg;base64," + b64):
        decoded = decode_image(cell, str(tmp_path))
        assert decoded.original_size == (40, 30)
        assert np.array_equal(pixels(decoded.image), pixels(from_file.image))


def test_grayscale_and_transparent_images_become_rgb(tmp_path):
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 128))
    for name, image in (("gray.png", gray), ("rgba.png", rgba)):
        image.save(tmp_path / name)
        decoded = decode_image(name, str(tmp_path))
        assert decoded.image.mode == "RGB" and decoded.image.size == (8, 8)


def test_exif_orientation_is_applied(tmp_path):
    # stored 40 wide x 20 tall: red left half, blue right half
    stored = scene(40, 20, (0, 0, 40, 20), colours=(RED, BLUE))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (tmp_path / "rotated.jpg").write_bytes(encoded(stored, "JPEG", quality=95, exif=exif))
    decoded = decode_image("rotated.jpg", str(tmp_path))
    # upright it is 20 wide x 40 tall, and original_size is the upright size
    assert decoded.image.size == (20, 40)
    assert decoded.original_size == (20, 40)
    # the stored left edge is the top once upright: red on top, blue below
    upright = pixels(decoded.image).astype(int)
    assert np.abs(upright[:16].mean((0, 1)) - RED).max() < 20
    assert np.abs(upright[24:].mean((0, 1)) - BLUE).max() < 20


def test_jpeg_draft_decodes_smaller_but_reports_the_full_size(tmp_path):
    (tmp_path / "big.jpg").write_bytes(encoded(noise_image(256, 192), "JPEG"))
    full = decode_image("big.jpg", str(tmp_path))
    draft = decode_image("big.jpg", str(tmp_path), draft_size=64)
    assert full.image.size == (256, 192) and full.original_size == (256, 192)
    assert draft.original_size == (256, 192)
    assert min(draft.image.size) >= 64 and draft.image.size[0] < 256


# --- decode_image: errors ----------------------------------------------------------------


def test_missing_file_names_the_resolved_path(tmp_path):
    with pytest.raises(ValueError) as info:
        decode_image("images/missing.png", str(tmp_path))
    message = str(info.value)
    assert "no such image file" in message
    assert os.path.join(str(tmp_path), "images/missing.png") in message


def test_missing_absolute_path_is_named_as_given(tmp_path):
    missing = str(tmp_path / "nowhere" / "x.jpg")
    with pytest.raises(ValueError, match="no such image file") as info:
        decode_image(missing, "/some/other/dir")
    assert missing in str(info.value)


def test_corrupt_and_truncated_files_cannot_be_decoded(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image at all" * 10)
    data = encoded(noise_image(64, 64), "PNG")
    (tmp_path / "truncated.png").write_bytes(data[:len(data) // 2])
    jpeg = encoded(noise_image(64, 64), "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    for name in ("corrupt.png", "truncated.png", "truncated.jpg"):
        with pytest.raises(ValueError, match="cannot decode") as info:
            decode_image(name, str(tmp_path))
        assert str(tmp_path / name) in str(info.value), name


def test_base64_of_something_else_cannot_be_decoded(tmp_path):
    cell = base64.b64encode(b"not an image, just some bytes" * 4).decode()
    with pytest.raises(ValueError, match=r"cannot decode the image \(base64\)"):
        decode_image(cell, str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot decode the image \(data: URI\)"):
        decode_image("data:image/png;base64," + cell, str(tmp_path))


def test_data_uri_must_be_base64(tmp_path):
    for cell in ("data:image/png,iVBORw0KGgo", "data:image/png;base64"):
        with pytest.raises(ValueError, match="data: URI must look like"):
            decode_image(cell, str(tmp_path))


def test_invalid_base64_is_reported(tmp_path):
    with pytest.raises(ValueError, match="not valid base64"):
        decode_image("data:image/png;base64,abcde", str(tmp_path))


@pytest.mark.parametrize("cell", ["hello world", "a photo of a cat on a mat, seen from above, "
                                  "at night, in the rain, with a lamp post nearby",
                                  "<img src=x>"])
def test_garbage_text_is_neither_file_nor_base64(tmp_path, cell):
    with pytest.raises(ValueError, match="neither an existing file, base64, nor a data: URI"):
        decode_image(cell, str(tmp_path))


# --- ImagePreprocessor: shapes, determinism, mask -------------------------------------------


def decoded_scene(width=48, height=32, box=(8, 6, 30, 24), colours=(RED,)) -> DecodedImage:
    return DecodedImage(scene(width, height, box, colours), (width, height))


@pytest.mark.parametrize("recipe", sorted(IMAGE_RECIPES))
@pytest.mark.parametrize("train", [False, True])
def test_output_is_uint8_square(recipe, train):
    torch.manual_seed(0)
    out, boxes = ImagePreprocessor(recipe, SIZE, train)(DecodedImage(noise_image(), (24, 16)))
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.uint8
    assert boxes == []


@pytest.mark.parametrize("recipe", sorted(IMAGE_RECIPES))
def test_eval_is_deterministic(recipe):
    preprocess = ImagePreprocessor(recipe, SIZE, train=False)
    decoded = DecodedImage(noise_image(), (24, 16))
    outputs = []
    for seed in range(3):
        torch.manual_seed(seed)
        outputs.append(preprocess(decoded)[0])
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    # ... and it is a plain resize of the whole image
    expected = torch.from_numpy(np.asarray(_resize(SIZE)(decoded.image)).copy()).permute(2, 0, 1)
    assert torch.equal(outputs[0], expected)


def test_imagenet_training_varies_with_the_seed():
    preprocess = ImagePreprocessor("imagenet", SIZE, train=True)
    decoded = DecodedImage(noise_image(48, 40), (48, 40))
    outputs = []
    for seed in range(5):
        torch.manual_seed(seed)
        outputs.append(preprocess(decoded)[0])
    distinct = {o.numpy().tobytes() for o in outputs}
    assert len(distinct) == 5
    torch.manual_seed(3)  # but a seed fixes it
    assert torch.equal(preprocess(decoded)[0], outputs[3])


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.3, 0.5])
def test_mask_ratio_fills_a_centred_square_with_the_mean_colour(ratio):
    size = 64
    # noise that is never the mean colour: the masked square is exactly the mean pixels
    image = Image.fromarray(np.random.default_rng(1).integers(0, 100, (40, 40, 3),
                                                                 dtype=np.uint8))
    decoded = DecodedImage(image, (40, 40))
    plain, _ = ImagePreprocessor("plain", size, train=False)(decoded)
    masked, _ = ImagePreprocessor("plain", size, train=False, mask_ratio=ratio)(decoded)
    mean = torch.tensor([round(255 * m) for m in IMAGENET_MEAN], dtype=torch.uint8)
    assert (plain != mean.view(3, 1, 1)).any(0).all()
    is_mean = (masked == mean.view(3, 1, 1)).all(0)
    rows, columns = is_mean.any(1).nonzero().flatten(), is_mean.any(0).nonzero().flatten()
    top, bottom = rows.min().item(), rows.max().item() + 1
    left, right = columns.min().item(), columns.max().item() + 1
    # a filled square ...
    assert is_mean[top:bottom, left:right].all()
    assert is_mean.sum().item() == (bottom - top) * (right - left)
    assert abs((bottom - top) - (right - left)) <= 1
    # ... of about ratio * area (each side is rounded to a pixel) ...
    side = size * ratio ** 0.5
    assert abs(is_mean.sum().item() - ratio * size * size) <= 2 * side + 1
    # ... in the centre
    assert abs(top - (size - bottom)) <= 1 and abs(left - (size - right)) <= 1
    # and the rest is untouched
    assert torch.equal(masked[:, ~is_mean], plain[:, ~is_mean])


def test_no_mask_by_default():
    decoded = DecodedImage(noise_image(), (24, 16))
    a, _ = ImagePreprocessor("plain", SIZE, train=False)(decoded)
    b, _ = ImagePreprocessor("plain", SIZE, train=False, mask_ratio=0.0)(decoded)
    assert torch.equal(a, b)


# --- boxes move with the image ---------------------------------------------------------


def test_plain_recipe_moves_boxes_with_the_image():
    box = (8, 6, 30, 24)
    for train in (False, True):
        out, (moved,) = ImagePreprocessor("plain", SIZE, train)(decoded_scene(box=box), [box])
        scale_x, scale_y = SIZE / 48, SIZE / 32
        assert moved == pytest.approx([8 * scale_x, 6 * scale_y, 30 * scale_x, 24 * scale_y])
        assert_box_close(moved, colour_bbox(out, RED))


def test_grounding_training_moves_boxes_with_the_image():
    box = (30, 14, 62, 40)
    decoded = DecodedImage(scene(80, 60, box), (80, 60))
    preprocess = ImagePreprocessor("grounding", SIZE, train=True)
    moved_boxes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, (moved,) = preprocess(decoded, [box])
        assert_box_close(moved, colour_bbox(out, RED))
        assert 0 <= moved[0] < moved[2] <= SIZE and 0 <= moved[1] < moved[3] <= SIZE
        moved_boxes.add(tuple(round(c, 3) for c in moved))
    assert len(moved_boxes) > 6  # the crops really differ


def test_several_boxes_move_together():
    red_box, blue_box = (4, 4, 20, 16), (40, 30, 70, 56)
    image = np.array(scene(80, 60, red_box))
    image[30:56, 40:70] = BLUE
    decoded = DecodedImage(Image.fromarray(image), (80, 60))
    preprocess = ImagePreprocessor("grounding", SIZE, train=True)
    for seed in range(8):
        torch.manual_seed(seed)
        out, (red, blue) = preprocess(decoded, [red_box, blue_box])
        assert_box_close(red, colour_bbox(out, RED))
        assert_box_close(blue, colour_bbox(out, BLUE))


def test_boxes_follow_a_jpeg_decoded_at_draft_scale(tmp_path):
    box = (64, 40, 200, 150)
    (tmp_path / "big.jpg").write_bytes(encoded(scene(256, 192, box), "JPEG", quality=95))
    decoded = decode_image("big.jpg", str(tmp_path), draft_size=SIZE)
    assert decoded.image.size[0] < 256  # really decoded at a reduced scale
    for recipe, train in (("plain", False), ("grounding", True)):
        torch.manual_seed(4)
        out, (moved,) = ImagePreprocessor(recipe, SIZE, train)(decoded, [box])
        assert_box_close(moved, colour_bbox(out, RED))
    out, (moved,) = ImagePreprocessor("plain", SIZE, False)(decoded, [box])
    assert moved == pytest.approx([c * SIZE / side for c, side in zip(box, (256, 192) * 2)],
                                  abs=1e-4)


def test_boxes_are_upright_coordinates_of_a_rotated_draft_jpeg(tmp_path):
    # the upright scene is 192 wide x 256 tall; the file stores it turned a quarter, with
    # EXIF orientation 6 to turn it back. Boxes are drawn on the upright image.
    box = (40, 100, 150, 220)
    stored = scene(192, 256, box).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "r.jpg").write_bytes(encoded(stored, "JPEG", quality=95, exif=exif))
    decoded = decode_image("r.jpg", str(tmp_path), draft_size=SIZE)
    assert decoded.original_size == (192, 256)
    assert decoded.image.size[0] < 192 and decoded.image.size[0] / decoded.image.size[1] == 0.75
    out, (moved,) = ImagePreprocessor("plain", SIZE, False)(decoded, [box])
    assert moved == pytest.approx([40 / 6, 100 / 8, 150 / 6, 220 / 8], abs=1e-4)
    assert_box_close(moved, colour_bbox(out, RED))


def test_grounding_flip_mirrors_x():
    # the box's left half is red and its right half blue: after a flip blue is on the left
    box = (30, 14, 62, 40)
    decoded = DecodedImage(scene(80, 60, box, colours=(RED, BLUE)), (80, 60))
    grounding = ImagePreprocessor("grounding", SIZE, train=True)
    # the same recipe without the flip (RandomHorizontalFlip draws its coin even at p=0, so
    # a seed gives both pipelines the same crop)
    unflipped = ImagePreprocessor("grounding", SIZE, train=True)
    unflipped.transform = v2.Compose([CropKeepingBoxes(min_scale=0.6),
                                      v2.RandomHorizontalFlip(p=0.0), _resize(SIZE)])
    flips = 0
    for seed in range(16):
        torch.manual_seed(seed)
        out, (moved,) = grounding(decoded, [box])
        torch.manual_seed(seed)
        reference, (straight,) = unflipped(decoded, [box])
        red, blue = colour_bbox(out, RED), colour_bbox(out, BLUE)
        flipped = blue[0] < red[0]
        assert_box_close(moved, [min(red[0], blue[0]), red[1], max(red[2], blue[2]), red[3]])
        if flipped:
            flips += 1
            assert moved == pytest.approx([SIZE - straight[2], straight[1],
                                           SIZE - straight[0], straight[3]], abs=1e-4)
            assert (out.int() - reference.flip(-1).int()).abs().max() <= 2
        else:
            assert moved == pytest.approx(straight, abs=1e-4)
            assert torch.equal(out, reference)
    assert 0 < flips < 16  # both cases were seen


# --- CropKeepingBoxes ------------------------------------------------------------------------


@pytest.mark.parametrize("boxes", [
    [(30, 14, 62, 40)],
    [(0, 0, 10, 10), (70, 50, 80, 60)],  # touching opposite corners: no room to crop
    [(0, 20, 80, 30)],  # full width
    [(39, 29, 41, 31)],  # tiny, in the centre
])
def test_crop_keeping_boxes_never_cuts_a_box(boxes):
    width, height, min_scale = 80, 60, 0.6
    image = Image.new("RGB", (width, height), BACKGROUND)
    crop = CropKeepingBoxes(min_scale)
    sizes = set()
    for seed in range(100):
        torch.manual_seed(seed)
        cropped, moved = crop(image, tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32), format="XYXY",
            canvas_size=(height, width)))
        h, w = moved.canvas_size
        assert (w, h) == cropped.size
        moved = moved.as_subclass(torch.Tensor)
        # every box is whole: inside the crop and the same size as before
        assert (moved[:, :2] >= 0).all() and (moved[:, 2] <= w).all() \
            and (moved[:, 3] <= h).all(), (seed, moved, (w, h))
        original = torch.tensor(boxes, dtype=torch.float32)
        assert torch.allclose(moved[:, 2:] - moved[:, :2], original[:, 2:] - original[:, :2])
        # the crop keeps at least min_scale of each side
        assert w >= min_scale * width - 1 and h >= min_scale * height - 1
        sizes.add((w, h))
    if boxes == [(39, 29, 41, 31)]:
        assert len(sizes) > 10  # it really is random


def test_crop_keeping_boxes_keeps_the_box_pixels():
    box = (30, 14, 62, 40)
    image = scene(80, 60, box)
    red_pixels = (np.asarray(image) == RED).all(-1).sum()
    crop = CropKeepingBoxes(0.6)
    for seed in range(30):
        torch.manual_seed(seed)
        cropped, moved = crop(image, tv_tensors.BoundingBoxes(
            torch.tensor([box], dtype=torch.float32), format="XYXY", canvas_size=(60, 80)))
        assert (np.asarray(cropped) == RED).all(-1).sum() == red_pixels
        x0, y0, x1, y1 = (int(c) for c in moved[0].tolist())
        assert (np.asarray(cropped)[y0:y1, x0:x1] == RED).all()
