"""Training streams tar shards: each rank and DataLoader worker reads whole shards in
order, batches are cut in a shuffle buffer, every row is trained once an epoch, ranks take
equal steps, and a resumed run continues with the batches it had not trained."""
import os
import re
import subprocess

import pytest

from ofasys_fairseq.data.stream_batches import StreamEpochIterator
from ofasys_fairseq.prepare.webdataset_shards import write_shards
from tests.helpers import (ONE_THREAD, instruction_task, sentences, tiny_train_command,
                           train_updates, write_jsonl)

INSTRUCTION = "[TEXT:src] what is the summary? -> [TEXT:tgt]"


def shards(directory, count: int, per_shard: int, seed: int = 1):
    """``count`` text rows as ``train-0000k.tar`` shards (and a valid.jsonl)."""
    os.makedirs(directory, exist_ok=True)
    rows = [{"src": s, "tgt": t} for s, t in zip(sentences(count, seed),
                                                  sentences(count, seed + 1, max_words=4))]
    write_jsonl(os.path.join(directory, "rows.jsonl"), rows)
    write_shards(os.path.join(directory, "rows.jsonl"), str(directory), "train", [], per_shard)
    write_jsonl(os.path.join(directory, "valid.jsonl"), rows[:6])
    return rows


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stream")
    rows = shards(directory, 90, per_shard=12)  # 8 shards, the last one of 6
    task = instruction_task(directory, INSTRUCTION, stream_buffer=10)
    task.load_dataset("train")
    return task, rows


def epoch_ids(task, rank: int, epoch: int = 1, ranks: int = 2, workers: int = 2,
              max_tokens=None, resume=None):
    """Each batch's example ids, as rank ``rank`` trains them in ``epoch``."""
    iterator = task.get_batch_iterator(task.datasets["train"], max_tokens=max_tokens,
                                       max_sentences=4, seed=1, num_shards=ranks,
                                       shard_id=rank, num_workers=workers, epoch=epoch)
    assert isinstance(iterator, StreamEpochIterator)
    if resume is not None:
        iterator.load_state_dict(resume)
    itr = iterator.next_epoch_itr(shuffle=True)
    assert len(itr) == len(iterator)
    return iterator, [batch["id"].tolist() if batch else [] for batch in itr]


def test_every_row_once_an_epoch_across_two_ranks_of_two_workers(streamed):
    task, rows = streamed
    dataset = task.datasets["train"]
    epochs = []
    for epoch in (1, 2):
        ranks = [epoch_ids(task, rank, epoch)[1] for rank in range(2)]
        assert len(ranks[0]) == len(ranks[1])  # equal steps: the shorter rank pads
        ids = [i for batches in ranks for batch in batches for i in batch]
        assert sorted(ids) == list(range(90))
        epochs.append(ranks)
        for batch in ranks[0]:  # the rows, whole (tars read in order, by key)
            for i in batch:
                source = dataset[i].source[1:-1]
                assert task.vocab.decode(source).startswith(rows[i]["src"])
    assert epochs[0] != epochs[1]  # another shard order and shuffle each epoch
    assert epochs[0] == [epoch_ids(task, rank, 1)[1] for rank in range(2)]  # reproducible


def test_each_worker_reads_whole_shards_and_batches_respect_max_tokens(streamed):
    task, _ = streamed
    dataset = task.datasets["train"]
    iterator, batches = epoch_ids(task, 0, max_tokens=40)
    plan = iterator._plan
    for worker in range(2):
        files = plan.files[(0, worker)]
        assert len(files) == 2  # 8 shards over 2 ranks x 2 workers
        examples = [i for pool in plan.pools[(0, worker)] for i in pool.examples]
        assert examples == [i for f in files for i in range(dataset.starts[f],
                                                             dataset.starts[f + 1])]
        assert all(len(pool.examples) <= 10 for pool in plan.pools[(0, worker)])
    for batch in filter(None, batches):
        assert len(batch) <= 4
        assert len(batch) * max(dataset.num_tokens(i) for i in batch) <= 40


def test_a_resumed_epoch_trains_the_batches_not_yet_trained(streamed):
    task, _ = streamed
    _, whole = epoch_ids(task, 1)
    first = task.get_batch_iterator(task.datasets["train"], max_sentences=4, seed=1,
                                    num_shards=2, shard_id=1, num_workers=2, epoch=1)
    running = first.next_epoch_itr(shuffle=True)
    trained = [next(running)["id"].tolist() for _ in range(7)]
    state = first.state_dict()
    assert state == {"epoch": 1, "iterations_in_epoch": 7, "layout": [2, 2, 10]}
    resumed, rest = epoch_ids(task, 1, resume=state)
    assert trained + rest == whole
    assert resumed.iterations_in_epoch == len(whole)
    assert resumed.state_dict()["epoch"] == 2


def test_more_ranks_than_shards_is_refused(tmp_path):
    shards(tmp_path, 10, per_shard=10)
    task = instruction_task(tmp_path, INSTRUCTION)
    task.load_dataset("train")
    with pytest.raises(ValueError, match=r"1 shard\(s\) cannot feed 2 data-parallel ranks"):
        task.get_batch_iterator(task.datasets["train"], max_sentences=4, num_shards=2)


@pytest.mark.slow
def test_two_processes_stream_uneven_shards_in_equal_steps(tmp_path):
    """3 shards over 2 ranks (gloo): the rank with one shard pads its epoch with empty
    batches, so the ranks step together, and each row is trained once an epoch."""
    shards(tmp_path / "data", 90, per_shard=30)
    command = tiny_train_command(tmp_path / "data", tmp_path / "ck", INSTRUCTION, "--lr",
                                 "0.003", "--batch-size", "8", "--max-epoch", "2",
                                 "--log-format", "simple", "--disable-validation",
                                 "--num-workers", "0", "--no-save")
    command = [command[0], "-m", "ofasys_fairseq.distributed_cpu", "--nprocs", "2",
               *[a for a in command[3:] if a != "--cpu"]]
    run = subprocess.run(command, capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    summaries = re.findall(r"\| train \| epoch 00(\d) \|.* bsz ([\d.]+) \| num_updates (\d+)", log)
    assert [int(epoch) for epoch, _, _ in summaries] == [1, 2]
    steps = int(summaries[0][2])
    assert steps == 8  # rank 0: 60 rows in 8 batches; rank 1: 30 in 4, then 4 empty
    assert float(summaries[0][1]) * steps == pytest.approx(90, abs=0.5)  # rows a step, summed


@pytest.mark.slow
def test_fairseq_train_streams_shards_and_resumes_where_it_stopped(tmp_path):
    shards(tmp_path / "data", 80, per_shard=20)

    def train(save_dir, max_update: int) -> str:
        command = tiny_train_command(
            tmp_path / "data", save_dir, INSTRUCTION, "--lr", "0.003", "--batch-size", "6",
            "--max-update", str(max_update), "--log-format", "simple", "--log-interval", "1",
            "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "2",
            "--stream-buffer", "15", "--seed", "2")
        run = subprocess.run(command, capture_output=True, text=True, env=ONE_THREAD,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout + run.stderr

    whole = train_updates(train(tmp_path / "whole", 24))
    first = train_updates(train(tmp_path / "resumed", 9))  # stops within epoch 1
    rest = train_updates(train(tmp_path / "resumed", 24))
    assert len(whole) == 24 and whole[24][0] == 2  # 16 batches an epoch (2 workers x 8)
    assert {**first, **rest} == whole  # the same batches, the same losses
    assert min(rest) == 10
