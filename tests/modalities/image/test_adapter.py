"""Image adapters: patch grids, 2-D positions, gradients and the checks on image size."""
import demo_data
import pytest
import torch
import torchvision
from fairseq import tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from ofasys_fairseq.modalities import get_modality
from ofasys_fairseq.modalities.base import AdapterOutput
from ofasys_fairseq.modalities.image.adapter import (IMAGE_ADAPTORS, RESNET_STAGE3_CHANNELS,
                                                     ImageAdapter, ImageGeometry, adapter_key,
                                                     build_image_adapter, resnet_stage3)
from ofasys_fairseq.models.ofasys_model import OFASysConfig
from tests.tasks.test_instruction_task import parse_args

DIM = 32
GEOMETRY = ImageGeometry(64, 16)


@pytest.fixture(scope="module", params=IMAGE_ADAPTORS)
def adaptor(request):
    return request.param


def build(adaptor: str, geometry: ImageGeometry = GEOMETRY) -> ImageAdapter:
    torch.manual_seed(0)
    return build_image_adapter(adaptor, geometry, DIM, resnet_depth=18)


def random_images(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)


# --- ImageGeometry -----------------------------------------------------------------------


def test_geometry_grid_and_patches():
    assert GEOMETRY.stride("resnet") == 16 and GEOMETRY.stride("vit") == 16
    assert GEOMETRY.grid("resnet") == 4 and GEOMETRY.num_patches("resnet") == 16
    assert GEOMETRY.grid("vit") == 4 and GEOMETRY.num_patches("vit") == 16
    fine = ImageGeometry(96, 8)
    assert fine.grid("vit") == 12 and fine.num_patches("vit") == 144
    assert fine.grid("resnet") == 6 and fine.num_patches("resnet") == 36
    fine.check(IMAGE_ADAPTORS)


@pytest.mark.parametrize("geometry,adaptor,stride", [
    (ImageGeometry(72, 8), "resnet", 16),  # fine for vit, not for resnet
    (ImageGeometry(64, 24), "vit", 24),
    (ImageGeometry(100, 10), "resnet", 16),
])
def test_geometry_check_rejects_sizes_not_a_multiple_of_the_stride(geometry, adaptor, stride):
    with pytest.raises(ValueError) as info:
        geometry.check([adaptor])
    message = str(info.value)
    assert f"--image-size {geometry.image_size}" in message
    assert f"multiple of the {adaptor} patch size {stride}" in message


@pytest.mark.parametrize("geometry,adaptor,phrase", [
    (ImageGeometry(0, 16), "resnet", "--image-size must be positive, got 0"),
    (ImageGeometry(-32, 16), "vit", "--image-size must be positive, got -32"),
    (ImageGeometry(64, 0), "vit", "--vit-patch-size must be positive, got 0"),
    (ImageGeometry(64, -16), "vit", "--vit-patch-size must be positive, got -16"),
])
def test_geometry_check_rejects_sizes_that_are_not_positive(geometry, adaptor, phrase):
    # 0 and -32 are "multiples" of 16, and a zero patch size would divide by zero
    with pytest.raises(ValueError, match=phrase):
        geometry.check([adaptor])


def test_geometry_check_only_checks_the_adaptors_in_use():
    ImageGeometry(64, 0).check(["resnet"])
    ImageGeometry(72, 8).check(["vit"])
    ImageGeometry(64, 24).check(["resnet"])
    ImageGeometry(64, 16).check([])


# --- resnet_stage3 ------------------------------------------------------------------------------


def test_resnet_stage3_rejects_unknown_depths():
    with pytest.raises(ValueError, match=r"--resnet-depth must be one of \[18, 34, 50, 101, 152\]"):
        resnet_stage3(20)


def test_resnet_stage3_stride_and_channels():
    features = resnet_stage3(18).eval()(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, RESNET_STAGE3_CHANNELS[18], 4, 4)


def test_unknown_adaptor():
    with pytest.raises(ValueError, match="unknown image adaptor 'clip'"):
        build_image_adapter("clip", GEOMETRY, DIM, 18)


def test_build_image_adapters_keys():
    assert adapter_key("vit") == "image_vit"
    # the IMAGE modality builds one adapter per adaptor its settings name, by key
    settings = {"image_size": 64, "vit_patch_size": 16, "adaptors": list(IMAGE_ADAPTORS)}
    built = get_modality("IMAGE").build_adapters(settings, OFASysConfig(resnet_depth=18), DIM)
    assert sorted(built) == sorted(adapter_key(a) for a in IMAGE_ADAPTORS)
    assert all(isinstance(a, ImageAdapter) for a in built.values())


# --- ImageAdapter ---------------------------------------------------------------------------------


def test_output_shape_and_padding_mask(adaptor):
    adapter = build(adaptor).eval()
    out = adapter(random_images(3))
    assert isinstance(out, AdapterOutput)
    assert out.embeddings.shape == (3, 16, DIM)
    assert out.embeddings.dtype == torch.float32
    assert out.padding_mask.shape == (3, 16) and out.padding_mask.dtype == torch.bool
    assert not out.padding_mask.any()


def test_rows_are_independent_in_eval(adaptor):
    adapter = build(adaptor).eval()
    images = random_images(3)
    together = adapter(images).embeddings
    for i in range(3):
        alone = adapter(images[i:i + 1]).embeddings[0]
        assert torch.allclose(together[i], alone, atol=1e-4), i


def test_positions_tell_patches_apart(adaptor):
    adapter = build(adaptor).eval()
    constant = torch.full((2, 3, 64, 64), 120, dtype=torch.uint8)
    out = adapter(constant).embeddings
    assert torch.allclose(out[0], out[1])  # identical images, identical outputs
    vectors = out[0]
    distances = torch.cdist(vectors, vectors)
    off_diagonal = distances[~torch.eye(16, dtype=torch.bool)]
    assert (off_diagonal > 1e-3).all()  # every patch differs from every other


def test_vit_patches_of_a_constant_image_differ_exactly_by_their_positions():
    adapter = build("vit").eval()
    out = adapter(torch.full((1, 3, 64, 64), 77, dtype=torch.uint8)).embeddings[0]
    rows = adapter.row_positions.weight
    columns = adapter.column_positions.weight
    # patches are flattened row by row: patch r * grid + c has row r and column c
    positions = (rows[:, None] + columns[None, :]).reshape(16, DIM)
    content = out - positions
    assert torch.allclose(content, content[:1].expand_as(content), atol=1e-5)
    with torch.no_grad():
        adapter.row_positions.weight.zero_()
        adapter.column_positions.weight.zero_()
    flat = adapter(torch.full((1, 3, 64, 64), 77, dtype=torch.uint8)).embeddings[0]
    assert torch.allclose(flat, flat[:1].expand_as(flat), atol=1e-5)


def test_patch_order_is_row_major():
    # a bright square in the top right patch only changes patch (row 0, column 3) = index 3
    adapter = build("vit").eval()
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    images[1, :, 0:16, 48:64] = 255
    out = adapter(images).embeddings
    changed = (out[0] - out[1]).abs().amax(-1) > 1e-5
    assert changed.nonzero().flatten().tolist() == [3]


def test_pixels_are_normalized_with_imagenet_statistics():
    adapter = build("vit")
    mean = adapter.mean.flatten()
    assert torch.allclose(mean, 255 * torch.tensor([0.485, 0.456, 0.406]))
    # the mean image enters the backbone as zeros: only the bias and positions remain
    image = mean.round().view(1, 3, 1, 1).expand(1, 3, 64, 64).to(torch.uint8)
    seen = {}
    adapter.backbone.register_forward_pre_hook(lambda module, inputs: seen.update(x=inputs[0]))
    adapter(image)
    assert seen["x"].abs().max() < 0.01


def test_gradients_reach_the_backbone(adaptor):
    adapter = build(adaptor).train()
    out = adapter(random_images(2)).embeddings
    (out ** 2).mean().backward()
    backbone = [p for p in adapter.backbone.parameters() if p.requires_grad]
    assert backbone and all(p.grad is not None for p in backbone)
    first = next(adapter.backbone.parameters())
    assert first.grad.abs().sum() > 0
    for table in (adapter.row_positions, adapter.column_positions):
        assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0


def test_another_image_size_gets_positions_interpolated_from_the_tables(adaptor):
    """One adapter reads every slot size: its tables (here for 64 px, a 4 x 4 grid) are
    linearly resampled to the slot's grid, keeping their end rows."""
    adapter = build(adaptor).eval()
    small = adapter(random_images(1, size=32))
    assert small.embeddings.shape == (1, 4, DIM) and not small.padding_mask.any()
    large = adapter(random_images(1, size=96))
    assert large.embeddings.shape == (1, 36, DIM)


def test_vit_positions_of_another_size_are_the_resampled_tables():
    adapter = build("vit").eval()
    rows, columns = adapter.row_positions.weight, adapter.column_positions.weight
    out = adapter(torch.full((1, 3, 96, 96), 77, dtype=torch.uint8)).embeddings[0]  # 6 x 6
    # grid 4 -> 6: position i of 6 sits at 3 * i / 5 on the table's 0..3 axis
    expected_rows = torch.stack([torch.lerp(rows[int(x)], rows[min(int(x) + 1, 3)], x - int(x))
                                 for x in (3 * i / 5 for i in range(6))])
    expected_columns = torch.stack([torch.lerp(columns[int(x)], columns[min(int(x) + 1, 3)],
                                               x - int(x)) for x in (3 * i / 5 for i in range(6))])
    positions = (expected_rows[:, None] + expected_columns[None, :]).reshape(36, DIM)
    content = out - positions
    assert torch.allclose(content, content[:1].expand_as(content), atol=1e-5)
    # gradients reach the tables through the interpolation
    adapter(random_images(2, size=32)).embeddings.sum().backward()
    assert adapter.row_positions.weight.grad.abs().sum() > 0


def test_resnet_depth_sets_the_projection():
    adapter = build_image_adapter("resnet", GEOMETRY, 256, resnet_depth=18)
    assert isinstance(adapter.project, torch.nn.Identity)  # 256 channels = model width
    adapter = build_image_adapter("resnet", GEOMETRY, DIM, resnet_depth=18)
    assert adapter.project.in_features == 256 and adapter.project.out_features == DIM


def test_resnet_weights_start_the_backbone_of_a_model_built_to_train(tmp_path):
    """torchvision ResNet weights a user downloaded (--resnet-weights) fill stages 1-3 when
    the model is built for training; a model built to read a checkpoint does not look for
    the file (it may be gone); weights of another depth are refused, naming the file."""
    data = demo_data.write_shapes(str(tmp_path), train=8, valid=4)
    torch.manual_seed(0)
    weights = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(weights, path)

    def build(depth_and_file, from_checkpoint=False):
        cfg = convert_namespace_to_omegaconf(parse_args(
            data, "[IMAGE:image] what does the image describe? -> [TEXT:caption]",
            "--image-size", "64", "--embed-dim", "32", "--ffn-embed-dim", "64",
            "--encoder-layers", "1", "--decoder-layers", "1", *depth_and_file))
        task = tasks.setup_task(cfg.task)
        return task.build_model(cfg.model, from_checkpoint=from_checkpoint)

    backbone = build(["--resnet-depth", "18", "--resnet-weights", str(path)]).encoder.adapters[
        "image_resnet"].backbone
    assert torch.equal(backbone[0].weight, weights["conv1.weight"])
    assert torch.equal(backbone[6][1].conv2.weight, weights["layer3.1.conv2.weight"])
    assert torch.equal(backbone[1].running_var, weights["bn1.running_var"])
    path.unlink()
    build(["--resnet-depth", "18", "--resnet-weights", str(path)], from_checkpoint=True)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=f"--resnet-weights {path}: not the weights of "
                                         f"torchvision's resnet18"):
        build(["--resnet-depth", "18", "--resnet-weights", str(path)])
