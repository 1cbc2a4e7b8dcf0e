"""Checkpoints written before modalities became plug-ins (task state format 1) still load
and compute what they computed; task states this code cannot read are refused saying why.

``fixtures/format1/multitask.pt`` was trained by that code (commit 0e50f00), which also
recorded its predictions and gold-target log-probabilities in ``expected.json``
(``fixtures/format1/make_fixture.py`` says how).
"""
import json
import os

import pytest
import torch

from ofasys_fairseq import OFASys
from ofasys_fairseq.data.table import InMemoryTable
from ofasys_fairseq.tasks.instruction_task import STATE_FORMAT, upgrade_task_state

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "format1")


@pytest.fixture(scope="module")
def expected():
    with open(os.path.join(FIXTURE, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def model():
    return OFASys.from_pretrained(os.path.join(FIXTURE, "multitask.pt"))


def gold_log_prob(model, name, rows):
    """Per row, the log-probability of its gold target, teacher forced."""
    member = model.task.member(name)
    table = InMemoryTable(rows)
    dataset = member.dataset_for(table, member.plan.bind_columns(table.columns),
                                 with_target=True)
    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits, _ = model.model(**batch["net_input"])
    lprobs = torch.log_softmax(logits.float(), -1)
    target = batch["target"]
    pad = model.task.dictionary.pad()
    return lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).masked_fill(
        target.eq(pad), 0).sum(-1)


def test_format1_settings_become_the_modalities_settings(model):
    settings = model.task.modality_settings
    assert settings["IMAGE"] == {"image_size": 32, "vit_patch_size": 16, "image_adaptor": "vit",
                                 "adaptors": ["vit"]}
    assert settings["BOX"] == {"num_bins": 8}
    assert sorted(model.instructions) == ["grounding", "nli"]


@pytest.mark.parametrize("name", ["nli", "grounding"])
def test_format1_checkpoint_computes_what_it_did(model, expected, name):
    rows = expected[name]["rows"]
    torch.testing.assert_close(gold_log_prob(model, name, rows),
                               torch.tensor(expected[name]["gold_log_prob"]),
                               atol=1e-4, rtol=1e-5)
    member = model.task.member(name)
    inputs = [{c: r[c] for c in member.plan.input_columns()} for r in rows]
    predictions = [r[member.plan.target.column]
                   for r in model.inference(task=name, data=inputs, beam=2)]
    if name == "grounding":
        for got, want in zip(predictions, expected[name]["predictions"]):
            assert got == pytest.approx(want)
    else:
        assert predictions == expected[name]["predictions"]


def test_a_newer_task_state_is_refused():
    with pytest.raises(ValueError, match=f"format {STATE_FORMAT + 1}, newer than"):
        upgrade_task_state({"format": STATE_FORMAT + 1})


def test_a_task_state_of_another_program_is_refused():
    with pytest.raises(ValueError, match="unrecognized task state.*not written by ofasys"):
        upgrade_task_state({"vocabulary": {}, "something": 1})
