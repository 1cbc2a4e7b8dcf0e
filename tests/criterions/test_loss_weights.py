"""Per-task loss weights and per-task statistics of ``instruction_ce`` on multitask
samples: a row's token losses are scaled by its task's weight (so are the gradients),
and each task's unweighted loss, tokens and samples are logged."""
import math

import demo_data
import pytest
import torch
from fairseq import metrics

from ofasys_fairseq.criterions.instruction_ce import InstructionCrossEntropyCriterion
from ofasys_fairseq.data.multitask_dataset import MultitaskDataset
from ofasys_fairseq.models.ofasys_model import OFASysConfig, OFASysModel
from tests.helpers import multitask_task, sentences, write_jsonl

NAMES = ["nli", "translation", "copy"]  # closed-set, open, and a task absent from batches
NLI, TRANSLATION, COPY = range(3)
LOSS_WEIGHTS = [3.0, 0.5, 1.0]
EPS = 0.1


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("loss-weights")
    dirs = {name: demo_data.write_task(str(root), name, train=16, valid=4, seed=1)
            for name in ("nli", "translation")}
    copy_dir = root / "copy"
    copy_dir.mkdir()
    rows = [{"src": s, "tgt": s} for s in sentences(16, seed=3, max_words=5)]
    write_jsonl(copy_dir / "train.jsonl", rows)
    write_jsonl(copy_dir / "valid.jsonl", rows[:4])
    dirs["copy"] = str(copy_dir)
    instructions = {"nli": demo_data.NLI_INSTRUCTION,
                    "translation": demo_data.TRANSLATION_INSTRUCTION,
                    "copy": "copy [TEXT:src] -> [TEXT:tgt]"}
    specs = {name: {"instruction": instructions[name], "data": dirs[name],
                    "loss_weight": weight} for name, weight in zip(NAMES, LOSS_WEIGHTS)}
    task = multitask_task(specs, root, batch_mode="mixed")
    task.load_dataset("train")
    return task


@pytest.fixture(scope="module")
def dataset(task) -> MultitaskDataset:
    return task.datasets["train"]


@pytest.fixture(scope="module")
def model(task):
    torch.manual_seed(0)
    cfg = OFASysConfig(embed_dim=16, ffn_embed_dim=32, attention_heads=2, encoder_layers=1,
                       decoder_layers=1, dropout=0.0, max_source_positions=64,
                       max_target_positions=64)
    return OFASysModel.build_model(cfg, task).eval()


@pytest.fixture(scope="module")
def criterion(task):
    return InstructionCrossEntropyCriterion(task, label_smoothing=EPS)


def reweighted(dataset, weights) -> MultitaskDataset:
    """The same tasks' datasets with other per-task loss weights."""
    return MultitaskDataset(dataset.datasets, weights, mode=dataset.mode)


def rows(dataset, task_index, locals_):
    return [int(dataset.offsets[task_index]) + i for i in locals_]


def collate(dataset, indices):
    return dataset.collater([dataset[i] for i in indices])


def run(model, criterion, sample):
    """Loss, logging output and every parameter's gradient for one sample."""
    model.zero_grad()
    loss, sample_size, log = criterion(model, sample)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()
             if p.grad is not None}
    return loss.detach(), sample_size, log, grads


HOMOGENEOUS = (NLI, [0, 3, 5, 8])


def mixed_indices(dataset):
    return rows(dataset, NLI, [1, 4, 6]) + rows(dataset, TRANSLATION, [0, 2, 7, 9])


# --- gradients ------------------------------------------------------------------------------


def test_weight_two_doubles_the_gradients_exactly(dataset, model, criterion):
    indices = rows(dataset, *HOMOGENEOUS)
    one = collate(reweighted(dataset, [1.0, 1.0, 1.0]), indices)
    two = collate(reweighted(dataset, [2.0, 1.0, 1.0]), indices)
    assert one["loss_weights"].tolist() == [1.0] * 4 and two["loss_weights"].tolist() == [2.0] * 4
    loss1, size1, log1, grads1 = run(model, criterion, one)
    loss2, size2, log2, grads2 = run(model, criterion, two)
    assert loss2.item() == 2 * loss1.item()
    assert size1 == size2 == one["ntokens"]  # the normalizer is the tokens, unweighted
    assert grads1.keys() == grads2.keys() and len(grads1) > 10
    for name in grads1:
        assert torch.equal(grads2[name], 2 * grads1[name]), name  # x2 is exact in floats
    assert any(g.abs().max() > 0 for g in grads1.values())
    # the logged per-task loss is the unweighted one
    assert log2["_task_loss:nli"] == pytest.approx(log1["_task_loss:nli"], rel=1e-6)
    assert log1["_task_loss:nli"] == pytest.approx(loss1.item(), rel=1e-6)


def test_configured_loss_weight_scales_the_gradients(dataset, model, criterion):
    indices = rows(dataset, *HOMOGENEOUS)
    configured = collate(dataset, indices)  # the task's loss_weight: 3
    assert configured["loss_weights"].tolist() == [3.0] * 4
    loss1, _, _, grads1 = run(model, criterion, collate(reweighted(dataset, [1.0] * 3), indices))
    loss3, _, _, grads3 = run(model, criterion, configured)
    assert loss3.item() == pytest.approx(3 * loss1.item(), rel=1e-6)
    for name in grads1:
        # x3 is not exact in floats: equal up to rounding
        assert torch.allclose(grads3[name], 3 * grads1[name], rtol=1e-5, atol=1e-6), name


def test_mixed_gradient_is_the_weighted_sum_of_each_tasks_gradient(dataset, model, criterion):
    indices = mixed_indices(dataset)
    weighted = collate(dataset, indices)  # nli rows 3.0, translation rows 0.5
    assert weighted["task_ids"].tolist() == [NLI] * 3 + [TRANSLATION] * 4
    assert weighted["loss_weights"].tolist() == [3.0] * 3 + [0.5] * 4
    assert "closed_set_steps" in weighted  # nli's label is closed-set, in the mixed sample
    loss, _, _, grads = run(model, criterion, weighted)
    loss_a, _, _, grads_a = run(model, criterion, collate(reweighted(dataset, [1, 0, 0]), indices))
    loss_b, _, _, grads_b = run(model, criterion, collate(reweighted(dataset, [0, 1, 0]), indices))
    assert loss.item() == pytest.approx(3.0 * loss_a.item() + 0.5 * loss_b.item(), rel=1e-6)
    for name in grads:
        assert torch.allclose(grads[name], 3.0 * grads_a[name] + 0.5 * grads_b[name],
                              atol=1e-5, rtol=1e-5), name
    # both tasks move the model, differently
    flat_a = torch.cat([g.flatten() for g in grads_a.values()])
    flat_b = torch.cat([g.flatten() for g in grads_b.values()])
    assert flat_a.norm() > 0 and flat_b.norm() > 0
    assert torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0).abs() < 0.99


def test_a_tasks_rows_train_alike_mixed_or_alone(dataset, model, criterion):
    """Weight 0 on the other task: the mixed batch's loss and gradient are those of the
    task's own batch (padding to the other task's width and re-indexed closed-set
    steps change nothing)."""
    only_nli = reweighted(dataset, [1, 0, 0])
    mixed_loss, _, _, mixed_grads = run(model, criterion,
                                        collate(only_nli, mixed_indices(dataset)))
    alone = collate(only_nli, rows(dataset, NLI, [1, 4, 6]))
    assert "task_index" in alone  # a one-task sample
    alone_loss, _, _, alone_grads = run(model, criterion, alone)
    assert mixed_loss.item() == pytest.approx(alone_loss.item(), rel=1e-5)
    for name in alone_grads:
        assert torch.allclose(mixed_grads[name], alone_grads[name], atol=1e-5), name


# --- logged per-task statistics --------------------------------------------------------------


def test_per_task_stats_of_a_mixed_batch(dataset, model, criterion):
    sample = collate(dataset, mixed_indices(dataset))
    pad = dataset.datasets[0].dictionary.pad()
    with torch.no_grad():
        loss, _, log = criterion(model, sample)
    tokens_per_row = sample["target"].ne(pad).sum(1)
    task_ids = sample["task_ids"]
    for t, name in enumerate(NAMES):
        assert log[f"_task_ntokens:{name}"] == int(tokens_per_row[task_ids == t].sum())
        assert log[f"_task_nsentences:{name}"] == int((task_ids == t).sum())
    assert log["_task_ntokens:nli"] > 0 and log["_task_ntokens:translation"] > 0
    # the absent task has its keys, all zero (data-parallel sums need equal keys)
    assert [log[f"_task_{stat}:copy"] for stat in ("loss", "ntokens", "nsentences")] == [0, 0, 0]
    assert sum(log[f"_task_ntokens:{n}"] for n in NAMES) == log["ntokens"]
    assert sum(log[f"_task_nsentences:{n}"] for n in NAMES) == log["nsentences"] == 7

    # the per-task losses are unweighted: they add up to the unweighted loss ...
    with torch.no_grad():
        unweighted, _, unweighted_log = criterion(
            model, collate(reweighted(dataset, [1.0] * 3), mixed_indices(dataset)))
    task_sum = sum(log[f"_task_loss:{n}"] for n in NAMES)
    assert task_sum == pytest.approx(unweighted.item(), rel=1e-5)
    assert unweighted_log["_task_loss:nli"] == pytest.approx(log["_task_loss:nli"], rel=1e-6)
    # ... while the loss trained on is weighted
    assert loss.item() == pytest.approx(3.0 * log["_task_loss:nli"]
                                        + 0.5 * log["_task_loss:translation"], rel=1e-5)
    # and each is that task's loss on its own batch
    for t, locals_ in ((NLI, [1, 4, 6]), (TRANSLATION, [0, 2, 7, 9])):
        with torch.no_grad():
            _, _, own = criterion(model, collate(dataset, rows(dataset, t, locals_)))
        assert own[f"_task_loss:{NAMES[t]}"] == pytest.approx(log[f"_task_loss:{NAMES[t]}"],
                                                              rel=1e-5)
        assert own[f"_task_ntokens:{NAMES[t]}"] == log[f"_task_ntokens:{NAMES[t]}"]


def test_samples_without_task_ids_log_no_task_stats(dataset, model, criterion):
    sample = collate(dataset, rows(dataset, *HOMOGENEOUS))
    for key in ("task_ids", "loss_weights", "task_index"):
        sample.pop(key)
    with torch.no_grad():
        _, _, log = criterion(model, sample)
    assert not any(key.startswith("_task_") for key in log)


def reduced(logs):
    with metrics.aggregate(new_root=True) as agg:
        InstructionCrossEntropyCriterion.reduce_metrics(logs)
        return agg.get_smoothed_values()


def test_reduce_metrics_logs_each_trained_tasks_loss(dataset, model, criterion):
    with torch.no_grad():
        logs = [criterion(model, collate(dataset, mixed_indices(dataset)))[2],
                criterion(model, collate(dataset, rows(dataset, TRANSLATION, [3, 5])))[2]]
    values = reduced(logs)

    def total(stat, name):
        return sum(log[f"_task_{stat}:{name}"] for log in logs)

    for name in ("nli", "translation"):
        expected = total("loss", name) / total("ntokens", name) / math.log(2)
        assert values[f"{name}_loss"] == pytest.approx(round(expected, 3), abs=1e-9)
        assert values[f"{name}_tokens"] == total("ntokens", name) > 0
        assert values[f"{name}_samples"] == total("nsentences", name)
    assert values["translation_samples"] == 4 + 2
    # copy was not trained: no loss (a 0 would drag its average), but its counts (0)
    assert "copy_loss" not in values
    assert values["copy_tokens"] == 0 and values["copy_samples"] == 0
    # the overall loss is the weighted one, per token
    loss = sum(log["loss"] for log in logs) / sum(log["sample_size"] for log in logs)
    assert values["loss"] == pytest.approx(round(float(loss) / math.log(2), 3), abs=1e-9)

    with torch.no_grad():
        logs.append(criterion(model, collate(dataset, rows(dataset, COPY, [0, 1, 2])))[2])
    values = reduced(logs)
    assert values["copy_loss"] > 0 and values["copy_samples"] == 3
