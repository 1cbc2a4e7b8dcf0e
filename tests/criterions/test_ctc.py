"""``--ctc-weight``: an auxiliary CTC loss of the text target over the encoder states of
the sound (not the prompt's text), equal to torch's CTC computed here from the encoder
output row by row; rows without sounds add nothing; it trains the sound adapter."""
import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from ofasys_fairseq.criterions.instruction_ce import InstructionCrossEntropyCriterion
from ofasys_fairseq.data.table import Table
from ofasys_fairseq.modalities.audio.adapter import subsampled_length
from tests.criterions.test_instruction_ce import tiny_model
from tests.helpers import instruction_task, write_jsonl

ASR = "[AUDIO:wav] what is said ? -> [TEXT:text]"
WORDS = ["one two", "three", "four five six", "seven", "eight nine", "two one"]


@pytest.fixture
def speech_task(tmp_path):
    (tmp_path / "wavs").mkdir()
    rows = []
    for i, words in enumerate(WORDS):
        t = np.arange(int((0.3 + 0.15 * i) * 16000)) / 16000
        soundfile.write(tmp_path / "wavs" / f"{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t),
                        16000)
        rows.append({"wav": f"wavs/{i}.wav", "text": words})
    write_jsonl(tmp_path / "train.jsonl", rows)
    task = instruction_task(tmp_path, ASR, vocab_size=40)
    task.prepare()
    table = Table(str(tmp_path / "train.jsonl"))
    dataset = task.dataset_for(table, task.bind_plan(table), with_target=True)
    return task, dataset


def test_ctc_is_torchs_ctc_over_the_sound_positions(speech_task):
    task, dataset = speech_task
    model = tiny_model(task)
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    plain, _, _ = InstructionCrossEntropyCriterion(task)(model, sample)
    with_ctc, _, log = InstructionCrossEntropyCriterion(task, ctc_weight=0.5)(model, sample)

    encoder = model.encoder(sample["net_input"]["src_tokens"],
                            features=sample["net_input"]["features"])
    states = encoder["encoder_out"][0].transpose(0, 1)  # B x T x C: the sound's block first
    dictionary = task.dictionary
    expected = 0.0
    for row in range(states.size(0)):
        frames = sample["net_input"]["features"][0]["inputs"]["lengths"]
        slot_row = sample["net_input"]["features"][0]["slots"][:, 0].tolist().index(row)
        positions = int(subsampled_length(frames[slot_row]))
        log_probs = F.log_softmax(model.decoder.output_layer(states[row, :positions]), dim=-1)
        target = [t for t in sample["target"][row].tolist()
                  if t not in (dictionary.pad(), dictionary.eos())]
        expected += F.ctc_loss(log_probs[:, None], torch.tensor([target]),
                               torch.tensor([positions]), torch.tensor([len(target)]),
                               blank=dictionary.bos(), reduction="sum").item()
    assert float(log["ctc_loss"]) == pytest.approx(expected, rel=1e-4)
    assert float(with_ctc) == pytest.approx(float(plain) + 0.5 * expected, rel=1e-4)


def test_ctc_trains_the_sound_adapter_and_text_rows_add_nothing(speech_task, tmp_path):
    task, dataset = speech_task
    model = tiny_model(task)
    sample = dataset.collater([dataset[i] for i in range(4)])
    criterion = InstructionCrossEntropyCriterion(task, ctc_weight=1.0)
    loss, _, log = criterion(model, sample)
    (loss - InstructionCrossEntropyCriterion(task)(model, sample)[0]).backward()
    adapter = model.encoder.adapters["audio_conv"]
    assert adapter.convolutions[0].weight.grad.abs().sum() > 0

    text = tmp_path / "text"
    text.mkdir()
    write_jsonl(text / "train.jsonl", [{"src": w, "tgt": w} for w in WORDS])
    text_task = instruction_task(text, "[TEXT:src] -> [TEXT:tgt]", vocab_size=40)
    text_task.prepare()
    table = Table(str(text / "train.jsonl"))
    text_data = text_task.dataset_for(table, text_task.bind_plan(table), with_target=True)
    text_sample = text_data.collater([text_data[i] for i in range(4)])
    text_model = tiny_model(text_task)
    with_ctc, _, log = InstructionCrossEntropyCriterion(text_task, ctc_weight=1.0)(
        text_model, text_sample)
    assert float(log["ctc_loss"]) == 0.0
    assert float(with_ctc) == float(InstructionCrossEntropyCriterion(text_task)(
        text_model, text_sample)[0])


def test_a_negative_weight_is_refused(speech_task):
    with pytest.raises(ValueError, match="--ctc-weight must be >= 0"):
        InstructionCrossEntropyCriterion(speech_task[0], ctc_weight=-1)
