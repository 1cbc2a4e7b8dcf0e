"""InstructionDataset as fairseq uses it: items by index, sizes, ordering, size
filtering, batching, collation (no_loss prefix, closed-set steps), noise in
training, and data errors found before training starts."""
import json
import logging
import pickle
import random

import demo_data
import numpy as np
import pytest
import torch
from fairseq.data import data_utils

from ofasys_fairseq.data.table import DataError, InMemoryTable, InvalidRows
from ofasys_fairseq.modalities.box import bin_symbol, parse_box, quantize
from ofasys_fairseq.modalities.text import normalize_text
from tests.helpers import WORDS, instruction_task, sentences, write_jsonl

OPEN = "summarize [TEXT:src] -> [TEXT:tgt]"
CLOSED = "[TEXT:src] about [TEXT:topic]? -> [TEXT:topic,no_loss] is [TEXT:label,closed_set]"
LABELS = ["yes", "no", "not sure"]
TOPICS = ["cats", "dogs", "birds"]


def make_rows(count: int, seed: int):
    rng = random.Random(seed)
    return [{"src": s, "topic": rng.choice(TOPICS), "tgt": " ".join(s.split()[:rng.randint(1, 4)]),
             "label": rng.choice(LABELS)} for s in sentences(count, seed)]


TRAIN = make_rows(40, seed=1)
VALID = make_rows(12, seed=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_jsonl(root / "train.jsonl", TRAIN)
    write_jsonl(root / "valid.jsonl", VALID)
    return root


def loaded(data_dir, instruction, split, **overrides):
    task = instruction_task(data_dir, instruction, **overrides)
    task.load_dataset(split)
    return task, task.datasets[split]


@pytest.fixture(scope="module")
def open_task(data_dir):
    task = instruction_task(data_dir, OPEN)
    task.load_dataset("train")
    task.load_dataset("valid")
    return task


@pytest.fixture(scope="module")
def closed_task(data_dir):
    task = instruction_task(data_dir, CLOSED)
    task.load_dataset("valid")
    return task


def encode(task, text):
    return task.vocab.encode(normalize_text(text))


def expected_open(task, row):
    """What the encoder reads and the decoder learns for OPEN, part by part."""
    d = task.dictionary
    source = [d.bos()] + encode(task, "summarize") + encode(task, row["src"]) + [d.eos()]
    return source, [], encode(task, row["tgt"])


def expected_closed(task, row):
    d = task.dictionary
    source = ([d.bos()] + encode(task, row["src"]) + encode(task, "about")
              + encode(task, row["topic"]) + encode(task, "?") + [d.eos()])
    prefix = encode(task, row["topic"]) + encode(task, "is")
    return source, prefix, encode(task, row["label"])


def trie_allowed(sequences, eos, done):
    """Tokens that continue some label after ``done`` (eos once a label is complete)."""
    allowed = set()
    for seq in sequences:
        if list(seq[:len(done)]) == list(done):
            allowed.add(seq[len(done)] if len(done) < len(seq) else eos)
    return allowed


# --- items, sizes ------------------------------------------------------------------------


def test_items_by_arbitrary_index(open_task):
    ds = open_task.datasets["valid"]
    assert len(ds) == len(VALID)
    for index in [7, 0, 11, 3, 7, 5]:
        item = ds[index]
        source, prefix, target = expected_open(open_task, VALID[index])
        assert item.id == index
        assert (item.source, item.prefix, item.target) == (source, prefix, target)
        assert item.target_input == target  # no noise outside training
        assert item.reference == VALID[index]["tgt"]


def test_closed_set_items(closed_task):
    ds = closed_task.datasets["valid"]
    assert ds.closed_set.labels == tuple(sorted(LABELS))  # default: the training labels
    for index in [4, 1, 9]:
        item = ds[index]
        assert (item.source, item.prefix, item.target) == expected_closed(closed_task,
                                                                          VALID[index])
        assert item.reference == VALID[index]["label"]


def test_sizes_and_num_tokens(open_task, closed_task):
    for task, build, rows in [(open_task, expected_open, VALID),
                              (closed_task, expected_closed, VALID)]:
        ds = task.datasets["valid"]
        for index, row in enumerate(rows):
            source, prefix, target = build(task, row)
            # the decoder reads eos + prefix + target and predicts prefix + target + eos
            src_size, tgt_size = len(source), len(prefix) + len(target) + 1
            assert ds.size(index) == (src_size, tgt_size)
            assert ds.num_tokens(index) == max(src_size, tgt_size)
            assert tuple(ds.sizes[index]) == (src_size, tgt_size)
        indices = np.arange(len(ds))
        assert ds.num_tokens_vec(indices).tolist() == [ds.num_tokens(i) for i in indices]


def test_max_length_truncates_tokens(data_dir):
    task, ds = loaded(data_dir, "[TEXT:src,max_length=3] -> [TEXT:tgt,max_length=2]", "valid")
    d = task.dictionary
    for index, row in enumerate(VALID):
        assert ds[index].source == [d.bos()] + encode(task, row["src"])[:3] + [d.eos()]
        assert ds[index].target == encode(task, row["tgt"])[:2]
        assert ds.size(index) == (len(ds[index].source), len(ds[index].target) + 1)


def test_slot_normalization_reaches_the_tokens(tmp_path):
    rows = [{"src": "The CAT, sat!", "tgt": "Big DOG"}, {"src": "a (red) MAT.", "tgt": "x"}]
    write_jsonl(tmp_path / "train.jsonl", rows * 5)
    task, ds = loaded(tmp_path, "[TEXT:src,uncased,no_punctuation] -> [TEXT:tgt,uncased]",
                      "train")
    d = task.dictionary
    assert ds[0].source == [d.bos()] + task.vocab.encode("the cat sat") + [d.eos()]
    assert ds[1].source == [d.bos()] + task.vocab.encode("a red mat") + [d.eos()]
    assert ds[0].target == task.vocab.encode("big dog")
    assert ds[0].reference == "big dog"


def test_unnamed_slots_read_columns_by_position(tmp_path):
    (tmp_path / "train.tsv").write_text("question\tanswer\nwhy the cat\tbecause\n"
                                        "how the dog\tslowly\n")
    task, ds = loaded(tmp_path, "[TEXT] ? -> [TEXT]", "train")
    d = task.dictionary
    assert ds[1].source == [d.bos()] + encode(task, "how the dog") + encode(task, "?") + [d.eos()]
    assert ds[1].target == encode(task, "slowly")


# --- ordering, filtering, batching ---------------------------------------------------------


def test_ordered_indices_for_evaluation(open_task):
    ds = open_task.datasets["valid"]
    # sorted by num_tokens (what --max-tokens budgets), then target size, then index
    expected = sorted(range(len(ds)), key=lambda i: (ds.num_tokens(i), ds.size(i)[1], i))
    assert ds.ordered_indices().tolist() == expected


def test_ordered_indices_for_training_are_shuffled_with_the_seed(open_task):
    ds = open_task.datasets["train"]
    orders = {}
    for seed in (1, 1, 2):
        with data_utils.numpy_seed(seed):  # what fairseq does before ordered_indices
            orders.setdefault(seed, []).append(ds.ordered_indices().tolist())
    first = orders[1][0]
    assert orders[1][1] == first  # same seed, same order
    assert sorted(first) == list(range(len(ds)))
    keys = [(ds.num_tokens(i), ds.size(i)[1]) for i in first]
    assert keys == sorted(keys)  # still sorted by (num_tokens, target size) for tight batches
    # rows of equal sizes come in another order with another seed
    assert orders[2][0] != first and [(ds.num_tokens(i), ds.size(i)[1])
                                      for i in orders[2][0]] == keys


def test_filter_indices_by_size(open_task):
    ds = open_task.datasets["train"]
    sizes = [ds.size(i) for i in range(len(ds))]
    max_src = sorted(s for s, _ in sizes)[len(ds) // 2]
    max_tgt = sorted(t for _, t in sizes)[3 * len(ds) // 4]
    kept = open_task.filter_indices_by_size(np.arange(len(ds)), ds, (max_src, max_tgt),
                                            ignore_invalid_inputs=True)
    expected = [i for i, (s, t) in enumerate(sizes) if s <= max_src and t <= max_tgt]
    assert 0 < len(expected) < len(ds)
    assert kept.tolist() == expected
    with pytest.raises(Exception, match="invalid"):
        open_task.filter_indices_by_size(np.arange(len(ds)), ds, (max_src, max_tgt))


def test_batches_from_fairseqs_iterator(open_task):
    ds = open_task.datasets["valid"]
    max_src = sorted(ds.size(i)[0] for i in range(len(ds)))[-3]  # drops the longest rows
    max_tokens = 40
    epoch_itr = open_task.get_batch_iterator(
        ds, max_tokens=max_tokens, max_positions=(max_src, 1024), ignore_invalid_inputs=True,
        seed=1, num_workers=0, epoch=1)
    seen = []
    for batch in epoch_itr.next_epoch_itr(shuffle=False):
        ids = batch["id"].tolist()
        seen += ids
        assert len(ids) * max(ds.num_tokens(i) for i in ids) <= max_tokens
        assert batch["net_input"]["src_tokens"].shape == (len(ids), max(ds.size(i)[0]
                                                                       for i in ids))
    assert sorted(seen) == [i for i in range(len(ds)) if ds.size(i)[0] <= max_src]


@pytest.mark.parametrize("batch_size, multiple", [(4, 8), (3, 2), (8, 8), (5, 1)])
def test_every_row_is_batched_whatever_the_batch_size_multiple(open_task, batch_size, multiple):
    # fairseq's data_utils.batch_by_size drops a last batch whose size is not a multiple
    # of --required-batch-size-multiple (8 by default); the dataset keeps it
    ds = open_task.datasets["valid"]
    epoch_itr = open_task.get_batch_iterator(
        ds, max_sentences=batch_size, required_batch_size_multiple=multiple, seed=1,
        num_workers=0, epoch=1, disable_iterator_cache=True)
    seen = [i for batch in epoch_itr.next_epoch_itr(shuffle=False) for i in batch["id"].tolist()]
    assert sorted(seen) == list(range(len(ds)))


# --- collation -----------------------------------------------------------------------------


def test_collater_open_target(open_task):
    ds = open_task.datasets["valid"]
    d = open_task.dictionary
    pad, eos = d.pad(), d.eos()
    indices = [5, 0, 9]
    batch = ds.collater([ds[i] for i in indices])
    assert set(batch) == {"id", "nsentences", "net_input", "decoder_prefix", "closed_set",
                          "target", "ntokens", "references", "target_slot", "output_context",
                          "data_path"}
    assert batch["target_slot"].modality == "TEXT" and batch["data_path"] == ds.name
    assert batch["output_context"] == [None] * 3  # text needs nothing to be postprocessed
    assert set(batch["net_input"]) == {"src_tokens", "src_lengths", "prev_output_tokens"}
    assert batch["id"].tolist() == indices and batch["nsentences"] == 3
    assert batch["decoder_prefix"] is None and batch["closed_set"] is None
    expected = [expected_open(open_task, VALID[i]) for i in indices]
    src_width = max(len(s) for s, _, _ in expected)
    tgt_width = max(len(t) + 1 for _, _, t in expected)
    net = batch["net_input"]
    assert net["src_tokens"].shape == (3, src_width)
    assert net["prev_output_tokens"].shape == batch["target"].shape == (3, tgt_width)
    assert net["src_lengths"].tolist() == [len(s) for s, _, _ in expected]
    for row, (source, _, target) in enumerate(expected):
        # right padded (fairseq's default), decoder starts with eos, target ends with it
        assert net["src_tokens"][row].tolist() == source + [pad] * (src_width - len(source))
        fill = [pad] * (tgt_width - len(target) - 1)
        assert net["prev_output_tokens"][row].tolist() == [eos] + target + fill
        assert batch["target"][row].tolist() == target + [eos] + fill
    assert batch["ntokens"] == sum(len(t) + 1 for _, _, t in expected)
    assert batch["references"] == [VALID[i]["tgt"] for i in indices]
    assert ds.collater([]) == {}


def test_collater_no_loss_prefix_and_closed_set_steps(closed_task):
    ds = closed_task.datasets["valid"]
    d = closed_task.dictionary
    pad, eos = d.pad(), d.eos()
    indices = [2, 8, 5, 0]
    batch = ds.collater([ds[i] for i in indices])
    target, prev = batch["target"], batch["net_input"]["prev_output_tokens"]
    width = target.size(1)
    label_sequences = [closed_task.vocab.encode(label) for label in LABELS]
    expected_positions, expected_allowed = [], []
    for row, index in enumerate(indices):
        _, prefix, label = expected_closed(closed_task, VALID[index])
        p, n = len(prefix), len(label)
        # the no_loss prefix is teacher forced and scored nowhere: pad in the target
        assert target[row, :p].tolist() == [pad] * p
        assert target[row, p:p + n + 1].tolist() == label + [eos]
        assert target[row, p + n + 1:].eq(pad).all()
        assert prev[row, :p + n + 1].tolist() == [eos] + prefix + label
        assert batch["decoder_prefix"][row, :p].tolist() == prefix
        assert batch["decoder_prefix"][row, p:].eq(pad).all()
        for step in range(n + 1):
            expected_positions.append(row * width + p + step)
            expected_allowed.append(trie_allowed(label_sequences, eos, label[:step]))
    assert batch["ntokens"] == int(target.ne(pad).sum()) == \
        sum(len(closed_task.vocab.encode(VALID[i]["label"])) + 1 for i in indices)
    steps = batch["closed_set_steps"]
    assert steps["positions"].tolist() == expected_positions
    allowed = steps["allowed"]
    assert allowed.shape == (len(expected_positions), max(map(len, expected_allowed)))
    for ids, expected in zip(allowed.tolist(), expected_allowed):
        assert set(i for i in ids if i >= 0) == expected
        assert ids[len(expected):] == [-1] * (len(ids) - len(expected))  # padded with -1
    flat = target.reshape(-1)
    for position, ids in zip(expected_positions, allowed.tolist()):
        assert int(flat[position]) in ids  # the gold token is always allowed
    assert batch["closed_set"] is ds.closed_set
    assert batch["references"] == [VALID[i]["label"] for i in indices]


def test_collater_for_inference(closed_task):
    rows = [{"src": r["src"], "topic": r["topic"]} for r in VALID[:3]]
    plan = closed_task.plan.bind_columns(["src", "topic"])
    ds = closed_task.dataset_for(InMemoryTable(rows), plan, with_target=False)
    batch = ds.collater([ds[i] for i in range(3)])
    assert "target" not in batch and batch["ntokens"] == 0
    d = closed_task.dictionary
    for row in range(3):
        _, prefix, _ = expected_closed(closed_task, VALID[row])
        width = batch["net_input"]["prev_output_tokens"].size(1)
        assert batch["net_input"]["prev_output_tokens"][row].tolist() == \
            [d.eos()] + prefix + [d.pad()] * (width - 1 - len(prefix))
    assert ds.size(0) == (len(ds[0].source), len(ds[0].prefix) + 1)


# --- training: templates, noise, epochs ------------------------------------------------------


def test_training_noise_never_touches_specials_or_the_loss_target(data_dir):
    task, ds = loaded(data_dir, "summarize [TEXT:src,mask_ratio=1.0] -> "
                      "[TEXT:tgt,noise_ratio=1.0]", "train")
    d = task.dictionary
    changed = 0
    for index in range(len(ds)):
        item = ds[index]
        # the whole slot is one span: bos and eos and the literal text stay
        assert item.source == [d.bos()] + encode(task, "summarize") + [task.vocab.mask_index,
                                                                        d.eos()]
        clean = encode(task, TRAIN[index]["tgt"])
        assert item.target == clean  # the loss sees the clean target ...
        assert len(item.target_input) == len(clean)  # ... the decoder reads a noisy one
        assert all(t in task.vocab.subword_ids for t in item.target_input)
        changed += item.target_input != clean
    assert changed > len(ds) // 2
    batch = ds.collater([ds[0], ds[1]])
    assert batch["target"][0, :len(ds[0].target)].tolist() == ds[0].target
    assert batch["net_input"]["prev_output_tokens"][0, 1:len(ds[0].target) + 1].tolist() == \
        ds[0].target_input


def test_noise_only_in_training(data_dir):
    instruction = "summarize [TEXT:src,mask_ratio=0.5] -> [TEXT:tgt,noise_ratio=0.5]"
    task, ds = loaded(data_dir, instruction, "valid")
    for index in range(len(ds)):
        source, _, target = expected_open(task, VALID[index])
        assert (ds[index].source, ds[index].target_input) == (source, target)


def test_training_items_depend_on_seed_epoch_and_index(data_dir):
    instruction = "summarize [TEXT:src,mask_ratio=0.4] -> [TEXT:tgt]"
    _, ds = loaded(data_dir, instruction, "train")
    assert not ds.can_reuse_epoch_itr_across_epochs
    epoch1 = [ds[i].source for i in range(len(ds))]
    assert [ds[i].source for i in range(len(ds))] == epoch1  # reproducible
    ds.set_epoch(2)
    assert [ds[i].source for i in range(len(ds))] != epoch1
    _, other_seed = loaded(data_dir, instruction, "train", seed=7)
    assert [other_seed[i].source for i in range(len(ds))] != epoch1


def test_templates_are_sampled_in_training_only(data_dir):
    instruction = "summarize [TEXT:src] -> [TEXT:tgt] ||| shorten the text [TEXT:src] -> [TEXT:tgt]"
    task, train = loaded(data_dir, instruction, "train")
    d = task.dictionary
    first = [d.bos()] + encode(task, "summarize")
    second = [d.bos()] + encode(task, "shorten the text")
    starts = {"first": 0, "second": 0}
    for index in range(len(train)):
        source = train[index].source
        starts["first" if source[:len(first)] == first else "second"] += 1
        assert source[:len(first)] == first or source[:len(second)] == second
        # sizes are the largest over the templates, so batching never underestimates
        assert train.size(index)[0] == len(second) + len(encode(task, TRAIN[index]["src"])) + 1
    assert starts["first"] > 5 and starts["second"] > 5
    task.load_dataset("valid")
    valid = task.datasets["valid"]
    assert all(valid[i].source[:len(first)] == first for i in range(len(valid)))


def test_dataset_pickles_for_dataloader_workers(open_task):
    ds = open_task.datasets["train"]
    copy = pickle.loads(pickle.dumps(ds))
    for index in [3, 17, 0]:
        assert copy[index] == ds[index]


# --- bad rows ---------------------------------------------------------------------------------


BAD_VALID_LINES = [
    (True, {"src": "the cat sat", "topic": "cats", "label": "yes"}),
    (True, {"src": "a dog ran", "topic": "dogs", "label": "no"}),
    (False, '{"src": "broken json'),  # line 3
    (True, {"src": "the red bird", "topic": "birds", "label": "not sure"}),
    (False, {"topic": "cats", "label": "yes"}),  # line 5: no src
    (False, {"src": ["a", "list"], "topic": "cats", "label": "yes"}),  # line 6
    (True, {"src": "the big mat", "topic": "cats", "label": "no"}),
    (False, {"src": "the rug", "topic": "dogs", "label": "perhaps"}),  # line 8: not a label
]


@pytest.fixture
def bad_valid_dir(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    with open(tmp_path / "valid.jsonl", "w") as f:
        for _, row in BAD_VALID_LINES:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return tmp_path


def test_every_invalid_row_is_reported_at_once_with_its_location(bad_valid_dir):
    task = instruction_task(bad_valid_dir, CLOSED)
    with pytest.raises(InvalidRows, match="invalid JSON") as info:
        task.load_dataset("valid")
    bad_lines = [number for number, (ok, _) in enumerate(BAD_VALID_LINES, start=1) if not ok]
    assert [e.line for e in info.value.errors] == bad_lines
    assert all(e.path.endswith("valid.jsonl") for e in info.value.errors)
    assert str(info.value).count("valid.jsonl, line ") == len(bad_lines)


def test_unknown_closed_set_label_is_located(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "valid.jsonl", [
        {"src": "the cat sat", "topic": "cats", "label": "yes"},
        {"src": "the rug", "topic": "dogs", "label": "perhaps"}])
    task = instruction_task(tmp_path, CLOSED)
    with pytest.raises(DataError, match="'perhaps' is not one of the 3 closed-set labels") as info:
        task.load_dataset("valid")
    assert (info.value.line, info.value.column) == (2, "label")


def test_skip_invalid_rows_counts_and_reports(bad_valid_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="ofasys_fairseq.data.instruction_dataset"):
        task, ds = loaded(bad_valid_dir, CLOSED, "valid", skip_invalid_rows=True)
    good = [row for ok, row in BAD_VALID_LINES if ok]
    bad = sum(not ok for ok, _ in BAD_VALID_LINES)
    assert len(ds) == len(good) and len(ds.invalid_rows) == bad
    assert f"skipped {bad} invalid rows of {bad_valid_dir / 'valid.jsonl'}" in caplog.text
    assert "line 3" in caplog.text  # the first error is shown
    for index, row in enumerate(good):  # indices are renumbered over the kept rows
        assert ds[index].id == index
        assert (ds[index].source, ds[index].prefix, ds[index].target) == \
            expected_closed(task, row)
    assert ds.collater([ds[i] for i in range(len(ds))])["references"] == \
        [row["label"] for row in good]


def test_skip_invalid_rows_with_no_usable_row(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "valid.jsonl", [{"other": "x"}, {"other": "y"}])
    task = instruction_task(tmp_path, OPEN, skip_invalid_rows=True)
    with pytest.raises(DataError, match="no usable rows") as info:
        task.load_dataset("valid")
    assert info.value.path.endswith("valid.jsonl")


def test_skip_invalid_rows_in_the_training_file(tmp_path):
    with open(tmp_path / "train.jsonl", "w") as f:
        for row in TRAIN:
            f.write(json.dumps(row) + "\n")
        f.write('{"src": "broken\n')
    task, ds = loaded(tmp_path, OPEN, "train", skip_invalid_rows=True)
    assert len(ds) == len(TRAIN) and len(ds.invalid_rows) == 1


# --- a missing column is reported before training, with the file's columns ------------------


def test_missing_column_in_a_tsv_header(tmp_path):
    (tmp_path / "train.tsv").write_text("src\ttarget\nthe cat\tsat\n")
    task = instruction_task(tmp_path, OPEN)
    with pytest.raises(DataError) as info:
        task.load_dataset("train")
    message = str(info.value)
    assert info.value.path == str(tmp_path / "train.tsv")
    assert "reads column(s) 'tgt'" in message and "the file's columns are: src, target" in message


def test_missing_column_in_jsonl_rows(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"src": "the cat", "target": "sat"}])
    task = instruction_task(tmp_path, OPEN)
    with pytest.raises(DataError) as info:
        task.load_dataset("train")
    assert (info.value.line, info.value.column) == (1, "tgt")
    assert "missing column 'tgt'" in str(info.value) and "this row has: src, target" in str(
        info.value)


def test_missing_column_in_another_subset(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    (tmp_path / "valid.csv").write_text("src,label\nthe cat,yes\n")
    task = instruction_task(tmp_path, OPEN)
    task.load_dataset("train")
    with pytest.raises(DataError, match=r"the file's columns are: src, label"):
        task.load_dataset("valid")


def test_words_in_the_rows_are_in_the_vocabulary(open_task):
    # the vocabulary is trained on the training texts: no <unk> for their words
    unk = open_task.dictionary.unk()
    for word in WORDS:
        assert unk not in open_task.vocab.encode(word)


# --- IMAGE and BOX slots ----------------------------------------------------------------


def test_image_patches_count_in_sizes_and_batches_carry_uint8_images(tmp_path):
    data = demo_data.write_shapes(str(tmp_path), train=10, valid=3)
    task = instruction_task(data, demo_data.SHAPES_GROUNDING_INSTRUCTION, image_size=64,
                            num_bins=16)
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    patches = (64 // 16) ** 2  # ResNet stages 1-3: stride 16
    for i in range(len(ds)):
        assert ds.size(i) == (len(ds[i].source) + patches, 4 + 1)  # four bins, then </s>
    batch = ds.collater([ds[i] for i in range(len(ds))])
    (group,) = batch["net_input"]["features"]
    assert group["adapter"] == "image_resnet"
    images = group["inputs"]["pixels"]
    assert images.shape == (3, 3, 64, 64)  # one image slot per row
    assert images.dtype == torch.uint8
    assert group["slots"].tolist() == [[0, 0], [1, 0], [2, 0]]
    assert batch["output_context"] == [(64, 64)] * 3  # the images' sizes, for box outputs
    rows = [ds.tables[0][int(r)] for r in ds.rows]
    assert batch["references"] == [parse_box(r["region"]) for r in rows]
    first_bin = task.dictionary.index(bin_symbol(0))
    assert [[t - first_bin for t in target[:4]] for target in batch["target"].tolist()] == \
        [quantize(parse_box(r["region"]), 64, 16) for r in rows]
