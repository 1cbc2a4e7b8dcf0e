"""Several references per row through fairseq's tools: training draws one, validation
(`--eval-metrics`, multitask `metrics:`) and `fairseq-generate --scoring` score all."""
import json
import random
import re

import pytest

from ofasys_fairseq.scoring.vqa_score import vqa_score
from tests.test_end_to_end import MODEL_ARGS, USER_DIR, fairseq, valid_metrics, write_rows

pytestmark = pytest.mark.slow

INSTRUCTION = "[TEXT:question] -> [TEXT:answers]"
COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "sun": "yellow",
           "blood": "red", "orange": "orange", "plum": "purple"}
SHADES = ["light", "dark", "pale", "deep"]


def vqa_row(rng: random.Random) -> dict:
    thing = rng.choice(sorted(COLOURS))
    colour = COLOURS[thing]
    # several humans agree on the colour; some add a shade
    answers = [colour] * rng.randint(2, 4) + [f"{rng.choice(SHADES)} {colour}"] * rng.randint(0, 2)
    rng.shuffle(answers)
    return {"question": f"what colour is the {thing} ?", "answers": answers}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("references")
    rng = random.Random(0)
    write_rows(root / "train.jsonl", [vqa_row(rng) for _ in range(400)])
    write_rows(root / "valid.jsonl", [vqa_row(rng) for _ in range(40)])
    return root


def test_validation_and_generate_score_every_reference(data, tmp_path):
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--task", "instruction",
                  "--instruction", INSTRUCTION, *MODEL_ARGS, "--max-epoch", "8",
                  "--eval-metrics", "vqa_score,exact_match,rouge_l",
                  "--best-checkpoint-metric", "vqa_score", "--maximize-best-checkpoint-metric",
                  "--save-dir", str(tmp_path / "ck"))
    rows = [json.loads(line) for line in (data / "valid.jsonl").read_text().splitlines()]
    # answering the plain colour (what most humans said) scores this
    majority = 100 * sum(vqa_score(r["answers"][0].split()[-1], r["answers"])
                         for r in rows) / len(rows)
    last = valid_metrics(log)[-1]
    assert float(last["vqa_score"]) == pytest.approx(majority, abs=0.01), log[-3000:]
    assert float(last["exact_match"]) == 100.0 and "bleu" not in last
    assert 0 < float(last["rouge_l"]) <= 100.0

    out = fairseq("generate", str(data), "--user-dir", USER_DIR, "--task", "instruction",
                  "--path", str(tmp_path / "ck" / "checkpoint_best.pt"), "--gen-subset", "valid",
                  "--beam", "2", "--batch-size", "7", "--cpu", "--scoring", "vqa_score")
    outputs = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M)}
    assert len(outputs) == len(rows)
    expected = 100 * sum(vqa_score(outputs[i], rows[i]["answers"]) for i in outputs) / len(rows)
    assert f"VQA score = {expected:.2f}" in out


def test_multitask_metrics_read_every_reference(data, tmp_path):
    tasks = {"colours": {"instruction": INSTRUCTION, "data": str(data),
                         "metrics": ["rouge_l", "vqa_score"]}}
    (tmp_path / "tasks.yaml").write_text(json.dumps({"tasks": tasks}))
    log = fairseq("train", "--user-dir", USER_DIR, "--task", "multitask", "--tasks",
                  str(tmp_path / "tasks.yaml"), *MODEL_ARGS, "--max-epoch", "1",
                  "--save-dir", str(tmp_path / "ck"))
    last = valid_metrics(log)[-1]
    assert {"colours_rouge_l", "colours_vqa_score", "score"} <= set(last), log[-3000:]
    assert float(last["score"]) == float(last["colours_rouge_l"])  # the first metric counts


def test_an_unknown_eval_metric_fails_before_training(data, tmp_path):
    with pytest.raises(AssertionError, match=r"--eval-metrics vqa: not available for the target "
                                             r"\[TEXT:answers\]; it supports bleu, cider, "
                                             r"rouge_l, exact_match, vqa_score"):
        fairseq("train", str(data), "--user-dir", USER_DIR, "--task", "instruction",
                "--instruction", INSTRUCTION, *MODEL_ARGS, "--eval-metrics", "vqa",
                "--save-dir", str(tmp_path / "ck"))
