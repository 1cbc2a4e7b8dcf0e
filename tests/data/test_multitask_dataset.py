"""MultitaskDataset: several tasks' datasets behind one index space, and the samples
its collater builds for one task, for a round and for a mixed batch (text-only and
image rows together: images only where a row has them)."""
import demo_data
import pytest
import torch

from ofasys_fairseq.data.multitask_dataset import BATCH_MODES, MultitaskDataset
from ofasys_fairseq.models.ofasys_model import OFASysConfig, OFASysModel
from tests.helpers import multitask_task

NAMES = ["nli", "grounding", "vqa"]  # text-only + closed set; image + box; image + closed set
LOSS_WEIGHTS = {"nli": 2.0, "grounding": 0.5, "vqa": 1.0}
NLI, GROUNDING, VQA = range(3)
NLI_TRAIN, SHAPES_TRAIN = 12, 8


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("multitask-data"))
    nli = demo_data.write_task(root, "nli", train=NLI_TRAIN, valid=4, seed=1)
    shapes = demo_data.write_shapes(root, train=SHAPES_TRAIN, valid=4)
    instructions = {"nli": demo_data.NLI_INSTRUCTION,
                    "grounding": demo_data.SHAPES_GROUNDING_INSTRUCTION,
                    "vqa": demo_data.SHAPES_VQA_INSTRUCTION}
    specs = {name: {"instruction": instructions[name], "data": nli if name == "nli" else shapes,
                    "loss_weight": LOSS_WEIGHTS[name]} for name in NAMES}
    task = multitask_task(specs, root, num_bins=16, image_size=64, image_adaptor="vit",
                          vit_patch_size=8, batch_mode="mixed")
    task.load_dataset("train")
    return task


@pytest.fixture(scope="module")
def dataset(task) -> MultitaskDataset:
    return task.datasets["train"]


def global_index(dataset, task_index, local):
    return int(dataset.offsets[task_index]) + local


def task_sample(dataset, task_index, locals_):
    """The task's own dataset's sample of these rows (its own, local, ids)."""
    own = dataset.datasets[task_index]
    return own.collater([own[i] for i in locals_])


def collate(dataset, indices):
    return dataset.collater([dataset[i] for i in indices])


# --- the index space -----------------------------------------------------------------------


def test_index_space(dataset):
    assert dataset.mode == "mixed"
    assert [len(d) for d in dataset.datasets] == [NLI_TRAIN, SHAPES_TRAIN, SHAPES_TRAIN]
    assert len(dataset) == NLI_TRAIN + 2 * SHAPES_TRAIN
    assert dataset.offsets.tolist() == [0, 12, 20, 28]
    for t in range(3):
        own = dataset.datasets[t]
        for local in (0, len(own) - 1):
            index = global_index(dataset, t, local)
            assert dataset.task_of(index) == t
            item = dataset[index]
            assert item.id == index  # global ids: unique over the tasks
            assert item.source == own[local].source and item.target == own[local].target
            assert dataset.size(index) == own.size(local)
            assert dataset.num_tokens(index) == own.num_tokens(local)
    assert dataset.num_tokens_vec([0, 12, 27]).tolist() == [
        dataset.num_tokens(i) for i in (0, 12, 27)]


def test_unknown_batch_mode(dataset):
    with pytest.raises(ValueError, match="unknown batch mode 'zipped'; expected one of"):
        MultitaskDataset(dataset.datasets, [1.0] * 3, mode="zipped")
    assert set(BATCH_MODES) == {"homogeneous", "mixed", "round"}


def assert_same(expected, actual, where):
    """Equal nested dicts / lists of tensors and plain values."""
    if isinstance(expected, dict):
        assert expected.keys() == actual.keys(), where
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(expected) == len(actual), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{where}[{i}]")
    elif torch.is_tensor(expected):
        assert torch.equal(expected, actual), where
    else:
        assert expected == actual, where


# --- one task -------------------------------------------------------------------------------


@pytest.mark.parametrize("task_index,locals_", [(NLI, [3, 0, 7]), (VQA, [1, 5])])
def test_one_task_batch_is_that_tasks_sample(dataset, task_index, locals_):
    sample = collate(dataset, [global_index(dataset, task_index, i) for i in locals_])
    own = task_sample(dataset, task_index, locals_)
    assert sample["task_index"] == task_index
    assert sample["task_ids"].tolist() == [task_index] * len(locals_)
    assert sample["loss_weights"].tolist() == [LOSS_WEIGHTS[NAMES[task_index]]] * len(locals_)
    assert sample["id"].tolist() == [global_index(dataset, task_index, i) for i in locals_]
    assert set(sample) == set(own) | {"task_index", "task_ids", "loss_weights"}
    for key, value in own.items():
        if key == "id":
            continue
        if key == "net_input":  # tensors, and feature groups of tensors
            assert_same(value, sample[key], key)
        elif key == "closed_set_steps":
            for name in ("positions", "allowed"):
                assert torch.equal(value[name], sample[key][name])
        elif torch.is_tensor(value):
            assert torch.equal(value, sample[key]), key
        else:
            assert value == sample[key], key
    assert ("features" in sample["net_input"]) == (task_index != NLI)


def test_empty_batch(dataset):
    assert dataset.collater([]) == {}


# --- round ----------------------------------------------------------------------------------


def test_round_batch_is_one_sample_per_task(dataset):
    rounds = MultitaskDataset(dataset.datasets, [LOSS_WEIGHTS[n] for n in NAMES], mode="round")
    # indices of two tasks, interleaved (as a round entry concatenates them, in any order)
    indices = [global_index(dataset, VQA, 2), global_index(dataset, NLI, 5),
               global_index(dataset, VQA, 0), global_index(dataset, NLI, 1)]
    sample = collate(rounds, indices)
    assert list(sample) == ["rounds"]
    first, second = sample["rounds"]
    assert (first["task_index"], second["task_index"]) == (NLI, VQA)  # by task
    for part, t, locals_ in ((first, NLI, [5, 1]), (second, VQA, [2, 0])):
        own = task_sample(dataset, t, locals_)
        assert part["id"].tolist() == [global_index(dataset, t, i) for i in locals_]
        assert part["task_ids"].tolist() == [t, t]
        assert part["loss_weights"].tolist() == [LOSS_WEIGHTS[NAMES[t]]] * 2
        assert torch.equal(part["target"], own["target"])
        assert torch.equal(part["net_input"]["src_tokens"], own["net_input"]["src_tokens"])
        assert part["ntokens"] == own["ntokens"]
    assert "features" not in first["net_input"] and "features" in second["net_input"]


# --- mixed ----------------------------------------------------------------------------------


# rows in the order given: grounding, nli, vqa, nli, vqa (the merged sample groups them
# by task, in the order the tasks first appear: a task without closed-set steps first)
MIXED = [(GROUNDING, 6), (NLI, 2), (VQA, 3), (NLI, 9), (VQA, 0)]
GROUPS = [(GROUNDING, [6]), (NLI, [2, 9]), (VQA, [3, 0])]
TEXT_ROWS, IMAGE_ROWS = [1, 2], [0, 3, 4]


@pytest.fixture(scope="module")
def mixed(dataset):
    return collate(dataset, [global_index(dataset, t, i) for t, i in MIXED])


def test_mixed_sample_rows(dataset, mixed):
    pad = dataset.datasets[0].dictionary.pad()
    ids = [global_index(dataset, t, i) for t, locals_ in GROUPS for i in locals_]
    assert mixed["id"].tolist() == ids and len(set(ids)) == len(ids)
    assert mixed["task_ids"].tolist() == [GROUNDING, NLI, NLI, VQA, VQA]
    assert mixed["loss_weights"].tolist() == [0.5, 2.0, 2.0, 1.0, 1.0]
    assert mixed["nsentences"] == 5
    parts = [task_sample(dataset, t, locals_) for t, locals_ in GROUPS]
    assert mixed["ntokens"] == sum(p["ntokens"] for p in parts)
    assert mixed["ntokens"] == int(mixed["target"].ne(pad).sum())
    row = 0
    for part in parts:
        for r in range(part["nsentences"]):
            for key, merged in (("src_tokens", mixed["net_input"]["src_tokens"]),
                                ("prev_output_tokens", mixed["net_input"]["prev_output_tokens"]),
                                ("target", mixed["target"])):
                own = part["target"] if key == "target" else part["net_input"][key]
                width = own.size(1)
                assert torch.equal(merged[row, :width], own[r]), (key, row)
                assert merged[row, width:].eq(pad).all()  # padded to the widest task
            assert mixed["net_input"]["src_lengths"][row] == part["net_input"]["src_lengths"][r]
            row += 1


def pixels_of(sample):
    (group,) = sample["net_input"]["features"]
    return group["inputs"]["pixels"]


def test_mixed_sample_images_only_for_image_rows(dataset, mixed):
    (group,) = mixed["net_input"]["features"]
    assert group["adapter"] == "image_vit"
    # row 0: grounding; 1, 2: nli (no pixels); 3, 4: vqa
    assert group["slots"].tolist() == [[r, 0] for r in IMAGE_ROWS]
    images = group["inputs"]["pixels"]
    assert images.shape == (3, 3, 64, 64)
    assert images.dtype == torch.uint8
    vqa = pixels_of(task_sample(dataset, VQA, [3, 0]))
    grounding = pixels_of(task_sample(dataset, GROUNDING, [6]))
    assert torch.equal(images, torch.cat([grounding, vqa]))


def test_mixed_sample_of_text_rows_only_has_no_images(dataset):
    # only one task with text: a one-task sample, without images at all
    sample = collate(dataset, [global_index(dataset, NLI, i) for i in (0, 1)])
    assert "features" not in sample["net_input"]


def test_mixed_closed_set_positions_point_at_the_gold_labels(dataset, mixed):
    steps = mixed["closed_set_steps"]
    parts = [task_sample(dataset, t, locals_) for t, locals_ in GROUPS]
    expected_gold, expected_allowed, expected_rows, first_row = [], [], [], 0
    for part in parts:
        own = part.get("closed_set_steps")
        if own is not None:  # vqa and nli; grounding's BOX target has none
            expected_gold += part["target"].reshape(-1)[own["positions"]].tolist()
            expected_allowed += [[a for a in ids if a >= 0] for ids in own["allowed"].tolist()]
            expected_rows += (own["positions"] // part["target"].size(1) + first_row).tolist()
        first_row += part["nsentences"]
    width = mixed["target"].size(1)
    gold = mixed["target"].reshape(-1)[steps["positions"]]
    assert gold.tolist() == expected_gold
    assert (steps["positions"] // width).tolist() == expected_rows
    assert set(expected_rows) == {1, 2, 3, 4}  # the closed-set tasks' rows, not grounding's
    assert [[a for a in ids if a >= 0] for ids in steps["allowed"].tolist()] == expected_allowed
    # every gold token is one its step allows; every closed-set row's label tokens and eos
    # are steps
    for g, ids in zip(gold.tolist(), steps["allowed"].tolist()):
        assert g in ids
    pad = dataset.datasets[0].dictionary.pad()
    scored = mixed["target"][1:].ne(pad).sum().item()
    assert len(steps["positions"]) == scored


# --- the model on a mixed batch ----------------------------------------------------------------


@pytest.fixture(scope="module")
def model(task):
    torch.manual_seed(0)
    cfg = OFASysConfig(embed_dim=16, ffn_embed_dim=32, attention_heads=2, encoder_layers=1,
                       decoder_layers=1, dropout=0.0, max_source_positions=128,
                       max_target_positions=128)
    return OFASysModel.build_model(cfg, task).eval()


def encode(model, sample):
    """Per row, the encoder output at its non-padding positions (a list of L_i x C)."""
    net_input = sample["net_input"]
    with torch.no_grad():
        out = model.encoder(net_input["src_tokens"], features=net_input.get("features"))
    x, mask = out["encoder_out"][0].transpose(0, 1), out["encoder_padding_mask"][0]
    return [x[r][~mask[r]] for r in range(x.size(0))], mask


def test_rows_encode_alike_alone_and_in_a_mixed_batch(dataset, model, mixed):
    merged, mask = encode(model, mixed)
    # the text rows have image positions, all padding: no dummy pixels are embedded
    image_width = mask.size(1) - mixed["net_input"]["src_tokens"].size(1)
    assert image_width == 64  # 64 x 64 images, 8 x 8 patches
    assert mask[TEXT_ROWS, :image_width].all() and not mask[IMAGE_ROWS, :image_width].any()
    row = 0
    for t, locals_ in GROUPS:
        alone, _ = encode(model, task_sample(dataset, t, locals_))
        for r in range(len(locals_)):
            assert merged[row].shape == alone[r].shape
            assert torch.allclose(merged[row], alone[r], atol=1e-5), (NAMES[t], r)
            row += 1
    # the text row's length: its tokens only
    assert merged[1].size(0) == int(mixed["net_input"]["src_lengths"][1])


def test_model_forward_on_a_mixed_batch_matches_each_tasks_batch(dataset, model, mixed):
    pad = dataset.datasets[0].dictionary.pad()
    with torch.no_grad():
        logits, _ = model(**mixed["net_input"])
    row = 0
    for t, locals_ in GROUPS:
        own = task_sample(dataset, t, locals_)
        with torch.no_grad():
            own_logits, _ = model(**own["net_input"])
        for r in range(len(locals_)):
            keep = own["net_input"]["prev_output_tokens"][r].ne(pad)
            width = own_logits.size(1)
            assert torch.allclose(logits[row, :width][keep], own_logits[r][keep], atol=1e-4)
            row += 1


def test_mixed_batches_respect_the_token_budget_as_the_encoder_pads_them(task, dataset):
    """A mixed batch pads its text to the widest text row and its images to the widest
    image part, which usually come from different rows: the budget counts both."""
    max_tokens = 400
    itr = task.get_batch_iterator(dataset, max_tokens=max_tokens, max_sentences=1000, seed=1)
    samples = [s for s in itr.next_epoch_itr(shuffle=False) if s]
    mixed = [s for s in samples if len(set(s["task_ids"].tolist())) > 1]
    assert mixed, "expected batches mixing the text and the image task"
    for sample in samples:
        rows, text_width = sample["net_input"]["src_tokens"].shape
        image_width = sum((int(group["slots"][:, 1].max()) + 1) * (64 // 8) ** 2
                          for group in sample["net_input"].get("features", ()))
        assert rows * max(text_width + image_width, sample["target"].size(1)) <= max_tokens
