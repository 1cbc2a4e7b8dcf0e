"""A subset split over several files (``train-00000.jsonl`` ...; a glob; a list in a
multitask config): one dataset over all of them, each file indexed and cached on its own,
errors naming the file they are in, and training exactly as on the same rows in one file."""
import json
import os
import subprocess

import numpy as np
import pytest

from ofasys_fairseq.data.instruction_dataset import InstructionDataset
from ofasys_fairseq.data.table import InvalidRows, Table
from ofasys_fairseq.tasks.task_specs import TaskConfigError
from tests.helpers import (ONE_THREAD, instruction_task, multitask_task, sentences,
                           tiny_train_command, train_updates, valid_lines, write_jsonl)

INSTRUCTION = "[TEXT:src] what is the summary? -> [TEXT:tgt]"


def pairs(count: int, seed: int):
    return [{"src": s, "tgt": t} for s, t in zip(sentences(count, seed),
                                                  sentences(count, seed + 1, max_words=4))]


def write_shards(directory, subset: str, rows, shards: int):
    """``rows`` as ``<subset>-0000k-of-0000n.jsonl`` files, in order."""
    os.makedirs(directory, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
        write_jsonl(os.path.join(directory, f"{subset}-{k:05d}-of-{shards:05d}.jsonl"),
                    [rows[i] for i in part])


@pytest.fixture(scope="module")
def same_rows(tmp_path_factory):
    """The same training and validation rows as one file each and as shards."""
    root = tmp_path_factory.mktemp("shards")
    train, valid = pairs(60, seed=1), pairs(12, seed=5)
    os.makedirs(root / "one")
    write_jsonl(root / "one" / "train.jsonl", train)
    write_jsonl(root / "one" / "valid.jsonl", valid)
    write_shards(root / "sharded", "train", train, 3)
    write_shards(root / "sharded", "valid", valid, 2)
    return root


def fairseq_train(data_dir, save_dir) -> subprocess.Popen:
    """fairseq-train on ``data_dir``, started (both runs of a test share the cores)."""
    return subprocess.Popen(
        tiny_train_command(data_dir, save_dir, INSTRUCTION, "--lr", "0.003", "--batch-size",
                           "8", "--max-epoch", "1", "--log-format", "simple",
                           "--log-interval", "1", "--eval-metrics", "bleu", "--seed", "3",
                           "--no-save"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ONE_THREAD)


def finished(run: subprocess.Popen) -> str:
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output[-3000:]
    return output


def test_shards_train_exactly_as_one_file(same_rows, tmp_path):
    runs = [fairseq_train(same_rows / name, tmp_path / name) for name in ("one", "sharded")]
    one, sharded = map(finished, runs)
    assert "train-00000-of-00003.jsonl .. train-00002-of-00003.jsonl (3 files)" in sharded
    assert "valid: 12 examples from" in sharded
    updates = train_updates(sharded)
    assert len(updates) == 8  # 60 rows in batches of 8
    assert updates == train_updates(one)  # the same batches: the same losses
    validations = valid_lines(sharded)
    assert len(validations) == 1 and "bleu" in validations[8]
    assert validations == valid_lines(one)  # references of every shard, one corpus


def test_bad_rows_of_every_shard_are_reported_together(tmp_path):
    rows = pairs(30, seed=2)
    rows[4] = {"src": "no target"}  # shard 0, line 5
    rows[27] = {"tgt": "no source"}  # shard 2, line 8
    write_shards(tmp_path, "train", rows, 3)
    task = instruction_task(tmp_path, INSTRUCTION, skip_invalid_rows=True)
    task.prepare()  # (the vocabulary skips them)
    task.cfg.skip_invalid_rows = False
    tables = task.open_subset(str(tmp_path), "train")
    with pytest.raises(InvalidRows) as info:
        task.dataset_for(tables, task.bind_plan(tables), with_target=True, train=True)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}/train-00000-of-00003.jsonl .. "
                              f"train-00002-of-00003.jsonl (3 files): 2 invalid rows")
    assert "train-00000-of-00003.jsonl, line 5, column 'tgt'" in message
    assert "train-00002-of-00003.jsonl, line 8, column 'src'" in message


class CountingTable(Table):
    """A Table that counts the rows it parses."""

    parsed = 0

    def __getitem__(self, index):
        CountingTable.parsed += 1
        return super().__getitem__(index)


def test_each_shard_is_cached_on_its_own(tmp_path):
    write_shards(tmp_path, "train", pairs(30, seed=3), 3)
    task = instruction_task(tmp_path, INSTRUCTION)
    task.prepare()
    paths = [t.path for t in task.open_subset(str(tmp_path), "train")]

    def opened():
        tables = [CountingTable(p, cached=True) for p in paths]
        plan = task.bind_plan(tables)  # (reads a row: a jsonl file's columns)
        CountingTable.parsed = 0
        dataset = InstructionDataset(tables, plan, task.vocab, task.modality_settings,
                                     train=True, cached=True)
        return dataset, CountingTable.parsed

    first, parsed = opened()
    assert parsed == 30 and len(first) == 30
    _, parsed = opened()
    assert parsed == 0
    with open(paths[1], "a") as f:
        f.write(json.dumps({"src": "one more row", "tgt": "more"}) + "\n")
    again, parsed = opened()
    assert parsed == 11 and len(again) == 31  # the changed shard alone is scanned
    assert np.array_equal(again.src_sizes[:20], first.src_sizes[:20])
    assert np.array_equal(again.src_sizes[21:], first.src_sizes[20:])  # shard 2, one later


def test_ranks_and_workers_divide_the_shards_rows(tmp_path):
    """Every row once an epoch across 2 ranks x 2 DataLoader workers, as fairseq
    divides the batches of one dataset."""
    rows = pairs(45, seed=4)
    write_shards(tmp_path, "train", rows, 4)
    task = instruction_task(tmp_path, INSTRUCTION)
    task.load_dataset("train")
    dataset = task.datasets["train"]
    seen = []
    for rank in range(2):
        iterator = task.get_batch_iterator(dataset, max_sentences=4, seed=1, num_shards=2,
                                           shard_id=rank, num_workers=2, epoch=1)
        for batch in iterator.next_epoch_itr(shuffle=True):
            for example_id, source in zip(batch["id"].tolist(),
                                          batch["net_input"]["src_tokens"]):
                seen.append(example_id)
                text = task.vocab.decode(source[source.ne(task.dictionary.pad())][1:-1].tolist())
                assert text.startswith(rows[example_id]["src"]), example_id
    assert sorted(seen) == list(range(45))


def test_a_multitask_subset_may_be_a_list_of_files(tmp_path):
    write_jsonl(tmp_path / "train-web.jsonl", pairs(10, seed=6))
    write_jsonl(tmp_path / "train-books.jsonl", pairs(14, seed=7))
    write_jsonl(tmp_path / "valid.jsonl", pairs(5, seed=8))
    task = multitask_task({"summary": {"instruction": INSTRUCTION, "data": str(tmp_path),
                                       "train_subset": ["train-web", "train-books"]}},
                          tmp_path)
    task.load_dataset("train")
    assert len(task.datasets["train"]) == 24
    for bad in ([], ["train-web", 3], 7):
        with pytest.raises(TaskConfigError, match="task 'summary': train_subset must be a "
                                                  "subset name or a list of them"):
            multitask_task({"summary": {"instruction": INSTRUCTION, "data": str(tmp_path),
                                        "train_subset": bad}}, tmp_path)


def test_a_sampled_vocabulary_and_every_rows_labels_as_from_one_file(tmp_path):
    rows = [{"src": s, "tgt": t.split()[0]} for s, t in zip(sentences(90, seed=8),
                                                          sentences(90, seed=9))]
    os.makedirs(tmp_path / "one")
    write_jsonl(tmp_path / "one" / "train.jsonl", rows)
    write_shards(tmp_path / "sharded", "train", rows, 4)
    instruction = "[TEXT:src] -> [TEXT:tgt,closed_set]"
    one, sharded = (instruction_task(tmp_path / name, instruction, vocab_sample_rows=25)
                    for name in ("one", "sharded"))
    for task in (one, sharded):
        task.prepare()
    assert sharded.vocab.state_dict() == one.vocab.state_dict()
    assert sharded.labels == one.labels == {"tgt": sorted({r["tgt"] for r in rows})}
