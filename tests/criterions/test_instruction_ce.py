"""Criterion ``instruction_ce``: label-smoothed cross entropy where no_loss positions
score nothing and closed-set positions are scored against the tokens the label set
allows. Expected values are computed here from the logits, one position at a time."""
import argparse
import math

import pytest
import torch
import torch.nn as nn
from fairseq import metrics
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from ofasys_fairseq.criterions.instruction_ce import (InstructionCrossEntropyCriterion,
                                                      closed_set_loss)
from ofasys_fairseq.models.ofasys_model import OFASysConfig, OFASysModel
from tests.helpers import instruction_task, sentences, write_jsonl

V = 9  # a tiny vocabulary: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>, 4.. words
PAD, EOS = 1, 2


def expected_position_loss(logits_row, gold, allowed, eps):
    """Label-smoothed NLL at one position, from scratch.

    The softmax runs over ``allowed`` only. The smoothed target gives the gold token
    1 - eps and spreads eps evenly over the K - 1 other allowed tokens (eps / (K - 1)
    each), fairseq's convention; with a single allowed token the target is certain.
    Returns (loss, nll)."""
    allowed = list(allowed)
    scores = torch.stack([logits_row[a] for a in allowed]).double()
    log_p = scores - torch.logsumexp(scores, dim=0)
    k = len(allowed)
    gold_at = allowed.index(gold)
    if k == 1:
        q = torch.ones(1, dtype=torch.double)
    else:
        q = torch.full((k,), eps / (k - 1), dtype=torch.double)
        q[gold_at] = 1.0 - eps
    return float(-(q * log_p).sum()), float(-log_p[gold_at])


def padded(rows, fill=-1):
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [fill] * (width - len(r)) for r in rows])


class FixedLogits(nn.Module):
    """A model whose decoder output is a given B x T x V logits tensor (a parameter, so
    the test can look at gradients)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, src_tokens, src_lengths, prev_output_tokens, features_only=False):
        return self.logits, {}  # the "features" are the logits ...

    @property
    def decoder(self):
        return self

    def output_layer(self, features):
        return features  # ... and the output layer is the identity


@pytest.fixture(scope="module")
def criterion_task(tmp_path_factory):
    return instruction_task(tmp_path_factory.mktemp("empty"), None)  # pad = 1, eos = 2


def criterion_for(task, eps):
    criterion = InstructionCrossEntropyCriterion(task, label_smoothing=eps)
    assert criterion.padding_idx == PAD
    return criterion


# --- closed_set_loss --------------------------------------------------------------------------


CLOSED_STEPS = [  # (gold, allowed ids): branching 3, 2, 1, 4 and the whole vocabulary
    (5, [5, 7, 4]),
    (2, [6, 2]),
    (8, [8]),
    (4, [4, 5, 6, 7]),
    (3, list(range(V))),
]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_closed_set_loss_matches_hand_computation(eps):
    torch.manual_seed(0)
    logits = torch.randn(len(CLOSED_STEPS), V) * 3
    gold = torch.tensor([g for g, _ in CLOSED_STEPS])
    allowed = padded([a for _, a in CLOSED_STEPS])
    loss, nll = closed_set_loss(logits, gold, allowed, eps)
    expected = [expected_position_loss(logits[i], g, a, eps) for i, (g, a) in
                enumerate(CLOSED_STEPS)]
    assert loss.tolist() == pytest.approx([l for l, _ in expected], rel=1e-5)  # per position
    assert nll.tolist() == pytest.approx([n for _, n in expected], rel=1e-5)
    if eps == 0.0:
        assert loss.tolist() == pytest.approx(nll.tolist(), rel=1e-6)


def test_single_allowed_token_contributes_nothing():
    logits = torch.tensor([[-20.0, 3.0, 15.0, 0.0, -7.0, 40.0, 1.0, 2.0, -3.0]])
    for gold in (2, 4):  # a likely and a very unlikely token: either way it is certain
        loss, nll = closed_set_loss(logits, torch.tensor([gold]), torch.tensor([[gold, -1, -1]]),
                                    0.1)
        assert loss.item() == 0.0 and nll.item() == 0.0


def test_tokens_outside_the_allowed_set_do_not_matter():
    torch.manual_seed(1)
    logits = torch.randn(len(CLOSED_STEPS) - 1, V, requires_grad=True)
    steps = CLOSED_STEPS[:-1]
    gold = torch.tensor([g for g, _ in steps])
    allowed = padded([a for _, a in steps])  # -1 padding: id 0 is never allowed here
    loss = closed_set_loss(logits, gold, allowed, 0.1)[0].sum()
    loss.backward()
    for i, (_, ids) in enumerate(steps):
        outside = [t for t in range(V) if t not in ids]
        assert logits.grad[i, outside].abs().max().item() == 0.0
    # a huge logit on a disallowed token (the one -1 padding is clamped to, too) changes
    # nothing
    shifted = logits.detach().clone()
    shifted[:, 0] += 100.0
    shifted[:, 1] -= 50.0
    again = closed_set_loss(shifted, gold, allowed, 0.1)[0].sum()
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_whole_vocabulary_allowed_equals_fairseqs_label_smoothing(eps):
    torch.manual_seed(2)
    logits = torch.randn(6, V)
    gold = torch.tensor([4, 5, 2, 8, 3, 6])
    allowed = torch.arange(V).repeat(6, 1)
    loss, nll = (values.sum() for values in closed_set_loss(logits, gold, allowed, eps))
    ref_loss, ref_nll = label_smoothed_nll_loss(torch.log_softmax(logits, -1), gold, eps,
                                                ignore_index=None, reduce=True)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    assert nll.item() == pytest.approx(ref_nll.item(), rel=1e-5)


# --- the criterion on a hand-built batch ----------------------------------------------------


# row 0: two no_loss prefix tokens (pad in the target), a 2-token label, eos, one pad
# row 1: a 4-token target and eos
TARGET = torch.tensor([[PAD, PAD, 5, 6, EOS, PAD],
                       [4, 7, 7, 5, EOS, PAD]])
# row 0's label is closed-set: flat positions 2, 3, 4 (its label tokens and eos)
ROW0_STEPS = [(2, [5, 4, 8]), (3, [6]), (4, [EOS, 7])]


def hand_built_sample(closed: bool):
    sample = {
        "id": torch.tensor([0, 1]),
        "nsentences": 2,
        "ntokens": int(TARGET.ne(PAD).sum()),
        "net_input": {"src_tokens": torch.tensor([[0, 4, 2], [0, 5, 2]]),
                      "src_lengths": torch.tensor([3, 3]),
                      "prev_output_tokens": torch.full_like(TARGET, PAD)},
        "target": TARGET,
    }
    if closed:
        sample["closed_set_steps"] = {"positions": torch.tensor([p for p, _ in ROW0_STEPS]),
                                      "allowed": padded([a for _, a in ROW0_STEPS])}
    return sample


def expected_batch_loss(logits, target, eps, closed_steps=()):
    """Sum over the scored positions; ``closed_steps``: (flat position, allowed ids)."""
    closed = dict(closed_steps)
    flat_logits, flat_target = logits.reshape(-1, logits.size(-1)), target.reshape(-1)
    loss = nll = 0.0
    for position, gold in enumerate(flat_target.tolist()):
        if gold == PAD:
            continue  # no_loss prefix and padding
        allowed = closed.get(position, range(logits.size(-1)))
        l, n = expected_position_loss(flat_logits[position], gold, allowed, eps)
        loss, nll = loss + l, nll + n
    return loss, nll


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_open_target_with_no_loss_prefix(criterion_task, eps):
    torch.manual_seed(3)
    logits = torch.randn(2, 6, V) * 2
    model = FixedLogits(logits)
    sample = hand_built_sample(closed=False)
    loss, sample_size, log = criterion_for(criterion_task, eps)(model, sample)
    expected_loss, expected_nll = expected_batch_loss(logits, TARGET, eps)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(expected_nll, rel=1e-5)
    assert sample_size == log["sample_size"] == log["ntokens"] == 8  # 3 + 5 scored tokens
    assert log["nsentences"] == 2

    loss.backward()  # no_loss and pad positions get no gradient
    pad_positions = TARGET.eq(PAD)
    assert model.logits.grad[pad_positions].abs().max().item() == 0.0
    assert model.logits.grad[~pad_positions].abs().min().item() > 0.0


def test_no_loss_positions_do_not_change_the_loss(criterion_task):
    torch.manual_seed(4)
    logits = torch.randn(2, 6, V)
    criterion = criterion_for(criterion_task, 0.1)
    base, _, _ = criterion(FixedLogits(logits), hand_built_sample(closed=False))
    changed = logits.clone()
    changed[TARGET.eq(PAD)] = torch.randn(int(TARGET.eq(PAD).sum()), V) * 50
    again, _, _ = criterion(FixedLogits(changed), hand_built_sample(closed=False))
    assert again.item() == pytest.approx(base.item(), rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25])
def test_closed_set_positions_use_the_allowed_tokens(criterion_task, eps):
    torch.manual_seed(5)
    logits = torch.randn(2, 6, V) * 2
    model = FixedLogits(logits)
    loss, sample_size, log = criterion_for(criterion_task, eps)(model,
                                                                hand_built_sample(closed=True))
    expected_loss, expected_nll = expected_batch_loss(logits, TARGET, eps, ROW0_STEPS)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(expected_nll, rel=1e-5)
    assert sample_size == 8
    # the closed-set loss differs from scoring the same positions over the whole vocabulary
    open_loss, _ = expected_batch_loss(logits, TARGET, eps)
    assert abs(open_loss - expected_loss) > 1e-3

    loss.backward()
    grad = model.logits.grad.reshape(-1, V)
    for position, ids in ROW0_STEPS:
        outside = [t for t in range(V) if t not in ids]
        assert grad[position, outside].abs().max().item() == 0.0
    # position 3 allows one token only: certain, so no gradient at all
    assert grad[3].abs().max().item() == 0.0


# --- the criterion with a real model and a real batch -------------------------------------------


CLOSED = "[TEXT:src] about [TEXT:topic]? -> [TEXT:topic,no_loss] is [TEXT:label,closed_set]"
OPEN = "[TEXT:src] -> [TEXT:topic,no_loss] : [TEXT:tgt]"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ce-data")
    rows = [{"src": s, "topic": ["cats", "dogs"][i % 2], "tgt": " ".join(s.split()[:3]),
             "label": ["good", "bad", "so so"][i % 3]} for i, s in enumerate(sentences(30, 5))]
    write_jsonl(root / "train.jsonl", rows)
    return root


def tiny_model(task):
    torch.manual_seed(0)
    cfg = OFASysConfig(embed_dim=16, ffn_embed_dim=32, attention_heads=2, encoder_layers=1,
                       decoder_layers=1, dropout=0.0, max_source_positions=64,
                       max_target_positions=64)
    return OFASysModel.build_model(cfg, task)


def real_steps(batch):
    steps = batch.get("closed_set_steps")
    if steps is None:
        return []
    return [(p, [a for a in ids if a >= 0]) for p, ids in
            zip(steps["positions"].tolist(), steps["allowed"].tolist())]


@pytest.mark.parametrize("instruction", [CLOSED, OPEN])
def test_real_model_batch(data_dir, instruction):
    task = instruction_task(data_dir, instruction, vocab_size=80)
    task.load_dataset("train")
    ds = task.datasets["train"]
    batch = ds.collater([ds[i] for i in range(8)])
    model = tiny_model(task).eval()
    # through fairseq's registry, as --criterion instruction_ce --label-smoothing 0.1 does
    criterion = task.build_criterion(argparse.Namespace(criterion="instruction_ce",
                                                        label_smoothing=0.1))
    assert isinstance(criterion, InstructionCrossEntropyCriterion) and criterion.eps == 0.1

    loss, sample_size, log = criterion(model, batch)
    logits = model(**batch["net_input"])[0].detach()
    assert logits.shape[:2] == batch["target"].shape
    expected_loss, expected_nll = expected_batch_loss(logits, batch["target"], 0.1,
                                                      real_steps(batch))
    assert loss.item() == pytest.approx(expected_loss, rel=1e-4)
    assert log["nll_loss"].item() == pytest.approx(expected_nll, rel=1e-4)
    # only label / target tokens and their eos are scored, not the no_loss topic prefix
    assert sample_size == batch["ntokens"] == int(batch["target"].ne(task.dictionary.pad()).sum())
    if instruction == CLOSED:
        assert len(real_steps(batch)) == sample_size  # every scored token is closed-set

    # gradients flow to the model: a few steps on this batch lower its loss
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(25):
        optimizer.zero_grad()
        step_loss, _, _ = criterion(model, batch)
        (step_loss / sample_size).backward()
        optimizer.step()
        first = step_loss.item() if first is None else first
    assert step_loss.item() < 0.9 * first


# --- metrics ------------------------------------------------------------------------------------


def test_reduce_metrics():
    logs = [{"loss": torch.tensor(6.0), "nll_loss": torch.tensor(5.0), "ntokens": 4,
             "nsentences": 2, "sample_size": 4},
            {"loss": torch.tensor(3.0), "nll_loss": torch.tensor(2.5), "ntokens": 2,
             "nsentences": 1, "sample_size": 2}]
    with metrics.aggregate() as agg:
        InstructionCrossEntropyCriterion.reduce_metrics(logs)
        values = agg.get_smoothed_values()
    # per-token averages in bits
    assert values["loss"] == pytest.approx(round(9.0 / 6 / math.log(2), 3))
    assert values["nll_loss"] == pytest.approx(round(7.5 / 6 / math.log(2), 3))
    assert values["ppl"] == pytest.approx(2 ** values["nll_loss"], rel=1e-2)
    assert InstructionCrossEntropyCriterion.logging_outputs_can_be_summed()
