"""TaskSchedule: the epoch's batch list of a multitask run, for every batch mode, on
real InstructionDatasets of three text tasks of different sizes (40, 80, 160 rows)."""
import math
from collections import Counter

import numpy as np
import pytest
from fairseq.data import iterators
from scipy import stats

from ofasys_fairseq.data.task_sampler import draw_task
from ofasys_fairseq.data.task_schedule import BatchBudget, TaskSchedule
from ofasys_fairseq.tasks.multitask_task import MultitaskTask
from tests.helpers import instruction_task, multitask_task, sentences, write_jsonl

SIZES = {"small": 40, "medium": 80, "large": 160}
VALID_SIZES = {"small": 7, "medium": 12, "large": 9}
WEIGHTS = {"small": 1.0, "medium": 2.0, "large": 5.0}  # p = 0.125, 0.25, 0.625
P = np.array([0.125, 0.25, 0.625])
SEED = 1
BATCH = 8  # max sentences: 5 + 10 + 20 = 35 batches per pass


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask-data")
    for i, (name, n) in enumerate(SIZES.items()):
        task_dir = root / name
        task_dir.mkdir()
        rows = [{"src": s, "tgt": " ".join(s.split()[:3])} for s in sentences(n, seed=20 + i)]
        write_jsonl(task_dir / "train.jsonl", rows)
        write_jsonl(task_dir / "valid.jsonl", rows[:VALID_SIZES[name]])
    return root


def build_task(root, spec_overrides=None, **cfg_overrides) -> MultitaskTask:
    specs = {name: {"instruction": f"{name} task: [TEXT:src] -> [TEXT:tgt]",
                    "data": str(root / name), "weight": WEIGHTS[name],
                    **(spec_overrides or {}).get(name, {})} for name in SIZES}
    task = multitask_task(specs, root, **{"seed": SEED, **cfg_overrides})
    task.load_dataset("train")
    task.load_dataset("valid")
    return task


@pytest.fixture(scope="module")
def task(data_root):
    return build_task(data_root)


@pytest.fixture(scope="module")
def train(task):
    return task.datasets["train"]


def make_schedule(dataset, mode, budgets=None, seed=SEED, num_shards=1, update_freq=1,
                  probabilities=P):
    budgets = budgets or [BatchBudget(None, BATCH)] * len(dataset.datasets)
    return TaskSchedule(dataset.datasets, dataset.offsets[:-1],
                        probabilities if callable(probabilities) else lambda update: probabilities,
                        budgets, mode,
                        seed, num_shards=num_shards, update_freq=update_freq)


def tasks_of(dataset, batch):
    return [dataset.task_of(int(i)) for i in batch]


def only_task(dataset, batch) -> int:
    found = set(tasks_of(dataset, batch))
    assert len(found) == 1, f"batch mixes tasks {found}"
    return found.pop()


def as_lists(plan):
    return [np.asarray(b).tolist() for b in plan]


def assert_passes_cover_each_example_once(dataset, batches_by_task, passes):
    """The first ``passes[t]`` batches a task trains are one pass over its examples."""
    for t, batches in batches_by_task.items():
        first = np.concatenate(batches[:passes[t]])
        offset, n = int(dataset.offsets[t]), len(dataset.datasets[t])
        assert sorted(first.tolist()) == list(range(offset, offset + n)), f"task {t}"


def test_the_task_loads_three_datasets(task, train):
    assert task.task_names == list(SIZES)
    assert [len(d) for d in train.datasets] == list(SIZES.values())
    assert train.offsets.tolist() == [0, 40, 120, 280]
    assert task.sampling_schedule(train.datasets).at(0).tolist() == pytest.approx(P.tolist())


# --- homogeneous ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_shards,update_freq", [(1, 1), (2, 1), (1, 2), (2, 3)])
def test_homogeneous_entries_follow_draw_task(train, num_shards, update_freq):
    W, k = num_shards, update_freq
    schedule = make_schedule(train, "homogeneous", num_shards=W, update_freq=k)
    assert schedule.batches_per_pass == [5, 10, 20]
    epoch = 2
    plan = schedule.batches(epoch)
    assert len(plan) % (W * k) == 0
    updates = len(plan) // (W * k)
    assert updates == math.ceil(35 / (W * k))  # one pass over all tasks' batches
    first_update = (epoch - 1) * updates  # the epoch's updates continue the last epoch's
    by_task = {t: [] for t in range(3)}
    for u in range(updates):
        for slot in range(W * k):
            rank, micro = divmod(slot, k)
            batch = plan[rank + (u * k + micro) * W]
            task = only_task(train, batch)
            assert task == draw_task(P, SEED, first_update + u, slot), (u, slot)
            assert 0 < len(batch) <= BATCH
            by_task[task].append(np.asarray(batch))
    assert schedule.task_sequence(epoch) == [
        [draw_task(P, SEED, first_update + u, s) for s in range(W * k)] for u in range(updates)]
    # each task's batches, in the order trained, are shuffled passes over its examples
    whole = {t: b for t, b in by_task.items() if len(b) >= schedule.batches_per_pass[t]}
    assert whole  # some task was drawn at least a pass's worth of batches
    assert_passes_cover_each_example_once(train, whole, schedule.batches_per_pass)


def test_homogeneous_plan_is_pure_in_seed_and_epoch(train):
    schedule = make_schedule(train, "homogeneous", num_shards=2)
    plan = as_lists(schedule.batches(3))
    # rebuilt from scratch, or asked again after other epochs: the same batches
    assert as_lists(make_schedule(train, "homogeneous", num_shards=2).batches(3)) == plan
    schedule.batches(1)
    assert as_lists(schedule.batches(3)) == plan
    # other epochs and other seeds: other plans (tasks and batches)
    assert as_lists(schedule.batches(4)) != plan
    assert as_lists(make_schedule(train, "homogeneous", num_shards=2, seed=2).batches(3)) != plan
    assert schedule.task_sequence(3) != schedule.task_sequence(4)


def test_homogeneous_task_frequencies_follow_the_sampler(train):
    schedule = make_schedule(train, "homogeneous")
    tasks = [only_task(train, b) for epoch in range(1, 41) for b in schedule.batches(epoch)]
    assert len(tasks) == 40 * 35
    counts = np.bincount(tasks, minlength=3)
    # chi-square goodness of fit, 2 degrees of freedom: the chi2 table's 0.999 quantile
    # is 13.816
    statistic, p_value = stats.chisquare(counts, P * len(tasks))
    assert statistic < 13.816 and p_value > 1e-3, counts
    assert np.abs(counts / len(tasks) - P).max() < 0.04


def test_homogeneous_batches_respect_each_tasks_budget(train):
    budgets = [BatchBudget(None, 3), BatchBudget(60, None), BatchBudget(30, 4)]
    schedule = make_schedule(train, "homogeneous", budgets=budgets, num_shards=2,
                             update_freq=2)
    plan = [b for epoch in (1, 2) for b in schedule.batches(epoch)]
    assert len(plan) % 4 == 0
    sizes = {t: [] for t in range(3)}
    for batch in plan:
        t = only_task(train, batch)
        dataset, offset = train.datasets[t], int(train.offsets[t])
        longest = max(dataset.num_tokens(int(i) - offset) for i in batch)
        max_tokens, max_sentences = budgets[t]
        assert len(batch) <= (max_sentences or math.inf)
        assert len(batch) * longest <= (max_tokens or math.inf)
        sizes[t].append(len(batch))
    assert max(sizes[0]) == 3  # the budgets are used, not just respected
    assert max(sizes[1]) > 4 and max(sizes[2]) <= 4
    assert schedule.batches_per_pass[0] == math.ceil(40 / 3)


def test_per_task_batch_size_overrides_the_runs(data_root):
    task = build_task(data_root, {"small": {"batch_size": 3}, "large": {"max_tokens": 40}})
    dataset = task.datasets["train"]
    itr = task.get_batch_iterator(dataset, max_sentences=BATCH, seed=SEED)
    sizes = {t: [] for t in range(3)}
    for sample in itr.next_epoch_itr(shuffle=False):
        t = sample["task_index"]
        assert sample["task_ids"].tolist() == [t] * sample["nsentences"]
        sizes[t].append(sample["nsentences"])
        if t == 2:  # max_tokens 40, as fairseq counts it: rows x the longest row
            longest = max(dataset.num_tokens(int(i)) for i in sample["id"])
            assert sample["nsentences"] * longest <= 40
    assert max(sizes[0]) == 3
    assert max(sizes[1]) == BATCH
    assert max(sizes[2]) < BATCH


# --- the key equivalence: 2 ranks x update_freq 1 == 1 rank x update_freq 2 -----------------


def updates_of(plan, num_shards, update_freq):
    """Per update, the multiset of batches it trains (over all ranks and micro-batches)."""
    W, k = num_shards, update_freq
    ranks = [plan[r::W] for r in range(W)]  # what fairseq's sharding gives each rank
    return [Counter(tuple(np.asarray(ranks[r][u * k + m]).tolist())
                    for r in range(W) for m in range(k))
            for u in range(len(plan) // (W * k))]


@pytest.mark.parametrize("epoch,seed", [(1, 1), (2, 1), (5, 7)])
def test_two_ranks_train_what_one_rank_with_update_freq_2_trains(train, epoch, seed):
    two_ranks = make_schedule(train, "homogeneous", seed=seed, num_shards=2).batches(epoch)
    accumulated = make_schedule(train, "homogeneous", seed=seed, update_freq=2).batches(epoch)
    assert len(two_ranks) == len(accumulated) == 36
    a, b = updates_of(two_ranks, 2, 1), updates_of(accumulated, 1, 2)
    assert len(a) == len(b) == 18
    assert a == b
    # and more ways to spread 4 batches an update: 4 ranks; 2 ranks x 2 micro-batches
    four = make_schedule(train, "homogeneous", seed=seed, num_shards=4).batches(epoch)
    mixed = make_schedule(train, "homogeneous", seed=seed, num_shards=2,
                          update_freq=2).batches(epoch)
    single = make_schedule(train, "homogeneous", seed=seed, update_freq=4).batches(epoch)
    assert updates_of(four, 4, 1) == updates_of(mixed, 2, 2) == updates_of(single, 1, 4)


def test_equivalence_through_fairseqs_iterators(data_root, task):
    """What ``fairseq-train`` runs: rank r iterates its shard of the epoch; with
    ``--update-freq 2`` one process groups its batches two by two."""
    two_ranks = [task.get_batch_iterator(task.datasets["train"], max_sentences=BATCH,
                                         seed=SEED, num_shards=2, shard_id=r, epoch=2)
                 for r in range(2)]
    per_rank = [[tuple(s["id"].tolist()) for s in itr.next_epoch_itr(shuffle=True)]
                for itr in two_ranks]
    accumulating = build_task(data_root, update_freq=[2])
    itr = accumulating.get_batch_iterator(accumulating.datasets["train"], max_sentences=BATCH,
                                          seed=SEED, epoch=2)
    grouped = list(iterators.GroupedIterator(itr.next_epoch_itr(shuffle=True), 2))
    assert len(per_rank[0]) == len(per_rank[1]) == len(grouped) == 18
    for u, micro_batches in enumerate(grouped):
        assert Counter(tuple(s["id"].tolist()) for s in micro_batches) == \
            Counter([per_rank[0][u], per_rank[1][u]]), f"update {u}"


# --- round ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_shards", [1, 2])
def test_round_entries_hold_one_batch_of_every_task(train, num_shards):
    budgets = [BatchBudget(None, 8), BatchBudget(None, 6), BatchBudget(None, 16)]
    schedule = make_schedule(train, "round", budgets=budgets, num_shards=num_shards)
    assert schedule.batches_per_pass == [5, 14, 10]
    plan = schedule.batches(1)
    # as many rounds as the task with the most batches has batches (made a multiple of W)
    assert len(plan) == math.ceil(14 / num_shards) * num_shards
    by_task = {t: [] for t in range(3)}
    for entry in plan:
        tasks = tasks_of(train, entry)
        assert tasks == sorted(tasks)  # task after task within the entry
        counts = Counter(tasks)
        assert sorted(counts) == [0, 1, 2]  # every task, once
        for t, count in counts.items():
            assert 0 < count <= budgets[t].max_sentences
            by_task[t].append(np.array([i for i, ti in zip(entry, tasks) if ti == t]))
    # a task's batches are its shuffled passes (small tasks start another pass)
    assert_passes_cover_each_example_once(train, by_task, schedule.batches_per_pass)
    assert as_lists(make_schedule(train, "round", budgets=budgets,
                                  num_shards=num_shards).batches(1)) == as_lists(plan)


# --- mixed ------------------------------------------------------------------------------------


MIXED_BUDGET = BatchBudget(90, 12)


def check_mixed_budget(dataset, plan, budget=MIXED_BUDGET):
    for batch in plan:
        if len(batch):
            longest = max(dataset.num_tokens(int(i)) for i in batch)
            assert len(batch) * longest <= budget.max_tokens
            assert len(batch) <= budget.max_sentences


@pytest.mark.parametrize("num_shards,update_freq", [(1, 1), (2, 2)])
def test_mixed_batches_hold_tasks_in_proportion(train, num_shards, update_freq):
    schedule = make_schedule(train, "mixed", budgets=[MIXED_BUDGET] * 3,
                             num_shards=num_shards, update_freq=update_freq)
    plan = schedule.batches(1)
    assert len(plan) % (num_shards * update_freq) == 0
    nonempty = [b for b in plan if len(b)]
    # padding to whole updates: empty batches, at the end only
    assert all(len(b) for b in plan[:len(nonempty)])
    assert len(plan) - len(nonempty) < num_shards * update_freq
    total = sum(len(b) for b in nonempty)
    assert total == sum(SIZES.values())  # as many examples as one pass over every task
    check_mixed_budget(train, plan)
    counts = np.bincount([t for b in nonempty for t in tasks_of(train, b)], minlength=3)
    assert np.abs(counts - P * total).max() <= 1.0, counts  # 35, 70, 175
    # every batch of more than one example mixes tasks
    assert all(len(set(tasks_of(train, b))) >= 2 for b in nonempty if len(b) > 1)
    # every batch roughly in proportion too: the large task is the majority of each
    for batch in nonempty:
        if len(batch) >= 4:
            assert Counter(tasks_of(train, batch))[2] >= len(batch) / 2
    # whole passes: no example a second time before every example of its task was drawn
    for t in range(3):
        drawn = Counter(int(i) for b in nonempty for i in b if train.task_of(int(i)) == t)
        n = len(train.datasets[t])
        passes = sum(drawn.values()) / n
        assert len(drawn) == min(n, sum(drawn.values()))
        assert set(drawn.values()) <= {math.floor(passes), math.ceil(passes)}


def test_mixed_with_size_sampling_reads_every_example_once(train):
    sizes = np.array(list(SIZES.values()), dtype=float)
    schedule = make_schedule(train, "mixed", budgets=[MIXED_BUDGET] * 3,
                             probabilities=sizes / sizes.sum())
    for epoch in (1, 2):
        plan = schedule.batches(epoch)
        check_mixed_budget(train, plan)
        drawn = sorted(int(i) for b in plan for i in b)
        assert drawn == list(range(len(train)))
    assert as_lists(schedule.batches(1)) != as_lists(schedule.batches(2))
    assert as_lists(schedule.batches(2)) == as_lists(
        make_schedule(train, "mixed", budgets=[MIXED_BUDGET] * 3,
                      probabilities=sizes / sizes.sum()).batches(2))


# --- sequential (validation) ------------------------------------------------------------------


def test_sequential_reads_each_task_once_task_after_task(task):
    valid = task.datasets["valid"]
    schedule = make_schedule(valid, "sequential", budgets=[BatchBudget(None, 4)] * 3)
    plan = schedule.batches(1)
    order = [only_task(valid, b) for b in plan]
    assert order == sorted(order) and set(order) == {0, 1, 2}
    for t in range(3):
        indices = [int(i) for b in plan if only_task(valid, b) == t for i in b]
        offset = int(valid.offsets[t])
        assert sorted(indices) == list(range(offset, offset + len(valid.datasets[t])))
    assert sum(len(b) for b in plan) == sum(VALID_SIZES.values())
    assert as_lists(schedule.batches(3)) == as_lists(plan)  # unshuffled: every epoch alike


def test_validation_iterator_is_sequential(task):
    valid = task.datasets["valid"]
    itr = task.get_batch_iterator(valid, max_sentences=5, seed=SEED, num_shards=1)
    samples = list(itr.next_epoch_itr(shuffle=False))
    order = [s["task_index"] for s in samples]
    assert order == sorted(order) and set(order) == {0, 1, 2}
    ids = sorted(int(i) for s in samples for i in s["id"])
    assert ids == list(range(len(valid)))
    assert all(len(s["id"]) <= 5 for s in samples)


def test_mixed_batch_order_is_shuffled(train):
    sizes = np.array(list(SIZES.values()), dtype=float)
    schedule = make_schedule(train, "mixed", budgets=[MIXED_BUDGET] * 3,
                             probabilities=sizes / sizes.sum())

    def lengths(epoch):
        return [max(train.num_tokens(int(i)) for i in b) for b in schedule.batches(epoch)
                if len(b)]

    first = lengths(1)
    # the order of batches has little to do with their length ...
    rho = stats.spearmanr(np.arange(len(first)), first).statistic
    assert abs(rho) < 0.5, rho
    # ... and changes from epoch to epoch
    assert lengths(2) != first


# --- examples longer than the model's positions -------------------------------------------------


@pytest.fixture(scope="module")
def long_task(tmp_path_factory):
    """A task whose every example is longer than 16 positions (its own vocabulary: only
    sizes matter to the schedule)."""
    root = tmp_path_factory.mktemp("long")
    write_jsonl(root / "train.jsonl",
                [{"src": s, "tgt": "x"} for s in sentences(12, seed=5, min_words=20,
                                                           max_words=30)])
    task = instruction_task(root, "[TEXT:src] -> [TEXT:tgt]", vocab_size=60)
    task.load_dataset("train")
    return task.datasets["train"]


def test_examples_longer_than_max_positions(train):
    datasets = train.datasets
    limit = (11, 16)  # some source sequences of every task are longer than 11
    too_long = [int((d.src_sizes > 11).sum()) for d in datasets]
    assert all(0 < n < len(d) for n, d in zip(too_long, datasets))
    with pytest.raises(ValueError, match=r"examples \(row index \d+ first\) are longer than"):
        TaskSchedule(datasets, train.offsets[:-1], lambda update: P,
                     [BatchBudget(None, BATCH)] * 3, "homogeneous", SEED, max_positions=limit)
    # skipped when asked: never in a batch, in any mode
    for mode in ("homogeneous", "round", "mixed"):
        schedule = TaskSchedule(datasets, train.offsets[:-1], lambda update: P,
                                [BatchBudget(None, BATCH)] * 3, mode, SEED, max_positions=limit,
                                ignore_invalid_inputs=True)
        drawn = {int(i) for b in schedule.batches(1) for i in b}
        assert drawn and all(train.sizes[i][0] <= 11 for i in drawn), mode


def test_a_task_without_any_example_within_max_positions_is_an_error(train, long_task):
    datasets = [train.datasets[0], long_task]
    assert long_task.src_sizes.min() > 16 >= train.datasets[0].src_sizes.max()
    with pytest.raises(ValueError, match=long_task.name):
        TaskSchedule(datasets, [0, len(datasets[0])], lambda update: np.array([0.5, 0.5]),
                     [BatchBudget(None, 4)] * 2, "homogeneous", SEED, max_positions=(16, 16),
                     ignore_invalid_inputs=True)
