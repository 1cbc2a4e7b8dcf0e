"""Speech through fairseq's tools: one model learns to transcribe spoken digit strings
(eSpeak NG voices; validation by voices training never hears) and to hear their phones,
as a two-task run; ``fairseq-generate`` scores each task as validation did (``--scoring
wer`` / ``per``), ``OFASys.inference`` transcribes a path and a data: URI alike; the run
resumed for its last epoch (with ``--ctc-weight``) takes the feature statistics from its
checkpoint."""
import base64
import json
import re

import demo_speech  # the demo's speech data (scripts/ is on the path)
import pytest

from tests.test_end_to_end import USER_DIR, fairseq, valid_metrics

from ofasys_fairseq import OFASys

pytestmark = pytest.mark.slow

MODEL_ARGS = ["--arch", "ofasys_tiny", "--embed-dim", "64", "--ffn-embed-dim", "128",
              "--attention-heads", "4", "--encoder-layers", "2", "--decoder-layers", "1",
              "--dropout", "0.0", "--criterion", "instruction_ce", "--optimizer", "adam",
              "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50",
              "--batch-size", "32", "--vocab-size", "60", "--cpu", "--seed", "3",
              "--num-workers", "0", "--log-format", "simple", "--log-interval", "20",
              "--no-epoch-checkpoints", "--best-checkpoint-metric", "score",
              "--maximize-best-checkpoint-metric",
              # digit strings are short: an untrained model's babble is cut early
              "--eval-max-len", "40"]


def train(tasks, save_dir, epochs: int, *extra: str) -> str:
    return fairseq("train", "--user-dir", USER_DIR, "--task", "multitask", "--tasks", tasks,
                   *MODEL_ARGS, "--max-epoch", str(epochs), "--save-dir", str(save_dir), *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    data = demo_speech.write_digits_task(str(root), train=480, valid=40)
    tasks = root / "tasks.yaml"
    tasks.write_text(json.dumps({"tasks": {
        "asr": {"instruction": demo_speech.ASR_INSTRUCTION, "data": data},
        "phones": {"instruction": demo_speech.PHONES_INSTRUCTION, "data": data}}}))
    first = train(str(tasks), root / "ck", epochs=8)
    # resumed from checkpoint_last.pt, with the auxiliary CTC loss added
    resumed = train(str(tasks), root / "ck", 9, "--ctc-weight", "0.3")
    return {"data": data, "ck": root / "ck", "log": first + resumed, "resumed": resumed}


def test_recognition_learns_words_and_phones_on_unheard_voices(trained):
    # one fit over both tasks' sounds (the same 480 files, read by each task)
    assert trained["log"].count("AUDIO statistics fitted on 960 training cells") == 1
    metrics = valid_metrics(trained["log"])
    assert len(metrics) == 9
    wer = [float(m["asr_wer"]) for m in metrics]
    per = [float(m["phones_per"]) for m in metrics]
    # about 100 (or far more, babbling) before training
    assert min(wer) < 60 and min(wer) < 0.7 * wer[0], wer
    assert min(per) < 70 and min(per) < 0.8 * per[0], per


def test_generate_scores_each_task_as_validation_did(trained):
    metrics = valid_metrics(trained["log"])
    # checkpoint_best: fairseq keeps the last of equal scores (it compares with >=)
    best = max(reversed(metrics), key=lambda m: float(m["score"]))
    outputs = {}
    for task, scoring, name in (("asr", "wer", "WER"), ("phones", "per", "PER")):
        out = fairseq("generate", trained["data"], "--user-dir", USER_DIR, "--task",
                      "instruction", "--trained-task", task, "--path",
                      str(trained["ck"] / "checkpoint_best.pt"), "--gen-subset", "valid",
                      "--beam", "1", "--batch-size", "16", "--cpu", "--post-process",
                      "sentencepiece", "--scoring", scoring,
                      "--max-len-a", "0", "--max-len-b", "40")  # as validation decodes
        score = float(re.search(rf"{name}: ([\d.]+)", out).group(1))
        assert score == pytest.approx(float(best[f"{task}_{scoring}"]), abs=0.01)
        outputs[task] = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M))
        assert len(outputs[task]) == 40
    phones = set(" ".join(json.loads(line)["phones"]
                          for line in open(f"{trained['data']}/train.jsonl")).split())
    assert set(" ".join(outputs["phones"].values()).split()) <= phones  # phones, printed

    rows = [json.loads(line) for line in open(f"{trained['data']}/valid.jsonl")]
    model = OFASys.from_pretrained(str(trained["ck"] / "checkpoint_best.pt"))
    with open(f"{trained['data']}/{rows[0]['wav']}", "rb") as f:
        uri = "data:audio/wav;base64," + base64.b64encode(f.read()).decode()
    by_path, by_uri = model.inference(
        data=[{"wav": f"{trained['data']}/{rows[0]['wav']}"}, {"wav": uri}], task="asr",
        beam=1)
    assert by_path["text"] == by_uri["text"] == outputs["asr"]["0"]


def test_a_resumed_run_takes_the_statistics_from_its_checkpoint(trained):
    assert "taking the vocabulary and labels from" in trained["resumed"]
    assert "statistics fitted" not in trained["resumed"]
    [metrics] = valid_metrics(trained["resumed"])
    assert float(metrics["ctc_loss"]) > 0
