"""End to end with fairseq's own tools on CPU: train, resume, generate, Python API,
Hydra, and the checkpoint allow-list."""
import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch

import ofasys_fairseq
from ofasys_fairseq import OFASys
from ofasys_fairseq.checkpoint_safety import UnsafeCheckpointError
from ofasys_fairseq.data.table import DataError

pytestmark = pytest.mark.slow

USER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "ofasys_fairseq")
# NLI-shaped: two encoder texts, the decoder echoes them without loss, then the label.
INSTRUCTION = ("does text1 [TEXT:review] match text2 [TEXT:topic]? -> "
               "does text1 [TEXT:review,no_loss] match text2 [TEXT:topic,no_loss]? "
               "[TEXT:label,closed_set]")
LABELS = ("positive", "negative", "mixed")
WORDS = {"positive": ["great", "lovely", "superb"], "negative": ["awful", "bland", "cold"]}
TOPICS = ["soup", "bread", "service", "pasta", "coffee"]
MODEL_ARGS = ["--arch", "ofasys_tiny", "--embed-dim", "64", "--ffn-embed-dim", "128",
              "--attention-heads", "4", "--encoder-layers", "1", "--decoder-layers", "1",
              "--dropout", "0.0", "--criterion", "instruction_ce", "--optimizer", "adam",
              "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20",
              "--batch-size", "32", "--vocab-size", "120", "--num-bins", "16", "--cpu",
              "--seed", "3", "--num-workers", "0", "--log-format", "simple",
              "--log-interval", "10", "--no-epoch-checkpoints"]


def review_example(rng: random.Random) -> dict:
    label = rng.choice(LABELS)
    topic = rng.choice(TOPICS)
    if label == "mixed":
        words = [rng.choice(WORDS["positive"]), rng.choice(WORDS["negative"])]
        rng.shuffle(words)
        review = f"the {topic} was {words[0]} but the room was {words[1]}"
    else:
        review = f"the {topic} was {rng.choice(WORDS[label])} and the room was quiet"
    return {"review": review, "topic": topic, "label": label}


def write_rows(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def fairseq(tool: str, *args: str, cwd=None) -> str:
    """Run a fairseq command-line tool; return its output, failing with it."""
    result = subprocess.run([sys.executable, "-m", f"fairseq_cli.{tool}", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def valid_metrics(log: str):
    return [dict(re.findall(r"\| (\w+) ([\d.]+)", line)) for line in log.splitlines()
            if "valid on 'valid' subset" in line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, save_dir = root / "data", root / "checkpoints"
    data.mkdir()
    rng = random.Random(0)
    write_rows(data / "train.jsonl", [review_example(rng) for _ in range(900)])
    write_rows(data / "valid.jsonl", [review_example(rng) for _ in range(120)])
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--task", "instruction",
                  "--instruction", INSTRUCTION, *MODEL_ARGS, "--max-epoch", "4",
                  "--save-dir", str(save_dir), "--best-checkpoint-metric", "accuracy",
                  "--maximize-best-checkpoint-metric")
    return {"data": str(data), "save_dir": str(save_dir), "log": log}


def test_training_reaches_high_validation_accuracy(trained):
    accuracy = [float(m["accuracy"]) for m in valid_metrics(trained["log"])]
    assert len(accuracy) == 4
    # chance is 33%: the label is decided by the sentiment words of text1
    assert accuracy[-1] >= 90.0, accuracy


def console_script(name: str, *args: str, cwd) -> str:
    """Run an installed console script from ``cwd``; return its output, failing with it."""
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), name), *args],
                            cwd=str(cwd), capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_resume_continues_from_checkpoint_last(trained, tmp_path):
    first_updates = int(valid_metrics(trained["log"])[-1]["num_updates"])
    # ofasys-train is fairseq-train with this plugin: no --user-dir, from any directory
    log = console_script("ofasys-train", trained["data"], "--task", "instruction",
                         "--instruction", INSTRUCTION, *MODEL_ARGS, "--max-epoch", "5",
                         "--num-workers", "2",  # rows read by index in forked workers
                         "--save-dir", trained["save_dir"], "--best-checkpoint-metric",
                         "accuracy", "--maximize-best-checkpoint-metric", cwd=tmp_path)
    state = torch.load(os.path.join(trained["save_dir"], "checkpoint_last.pt"),
                       weights_only=True)
    assert state["cfg"]["common"]["user_dir"] == os.path.dirname(ofasys_fairseq.__file__)
    # fairseq reports the epoch the resumed run starts, i.e. the one after the last saved
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 5 @ "
                     rf"{first_updates} updates\)", log), log[-3000:]
    assert "taking the vocabulary and labels from" in log
    assert "train.jsonl: 900 examples' sizes from the index cache (no scan)" in log
    metrics = valid_metrics(log)
    assert len(metrics) == 1 and int(metrics[0]["num_updates"]) > first_updates
    assert float(metrics[0]["accuracy"]) >= 90.0


def test_the_index_cache_changes_no_batch_and_no_loss(trained, tmp_path):
    """A run reading the training file's sizes from the index cache (the fixture's run
    built it) trains exactly as one that scans the file."""
    def losses(save_dir, *extra):
        log = fairseq("train", trained["data"], "--user-dir", USER_DIR, "--instruction",
                      INSTRUCTION, *MODEL_ARGS, "--max-update", "30", "--log-interval", "5",
                      "--save-dir", str(save_dir), *extra)
        return re.findall(r"train_inner \| .*? loss=([\d.]+)", log), log

    cached, log = losses(tmp_path / "cached")
    assert "examples' sizes from the index cache (no scan)" in log
    scanned, log = losses(tmp_path / "scanned", "--no-data-cache")
    assert "index cache" not in log
    assert len(cached) == 6 and cached == scanned


def test_generate_prints_labels_and_python_api_reproduces_them(trained, tmp_path):
    checkpoint = os.path.join(trained["save_dir"], "checkpoint_best.pt")
    out = fairseq("generate", trained["data"], "--user-dir", USER_DIR, "--task", "instruction",
                  "--path", checkpoint, "--gen-subset", "valid", "--beam", "3",
                  "--batch-size", "16", "--cpu", "--post-process", "sentencepiece",
                  "--scoring", "exact_match")
    hypotheses = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M)}
    targets = {int(i): t for i, t in re.findall(r"^T-(\d+)\t(.*)$", out, re.M)}
    assert len(hypotheses) == len(targets) == 120
    assert set(hypotheses.values()) <= set(LABELS)  # the trie keeps outputs in the label set
    h_lines = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", out, re.M))
    assert all(h_lines[str(i)] == h for i, h in hypotheses.items())  # detokenized H- lines
    correct = sum(hypotheses[i] == targets[i] for i in targets)
    assert correct / len(targets) >= 0.9
    assert f"exact_match = {100 * correct / len(targets):.2f} ({correct}/120)" in out

    # the installed console script finds the plugin from any directory
    console = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ofasys-generate"), trained["data"],
         "--task", "instruction", "--path", checkpoint, "--gen-subset", "valid", "--beam", "3",
         "--batch-size", "16", "--cpu"], cwd=str(tmp_path), capture_output=True, text=True,
        timeout=600)
    assert console.returncode == 0, console.stderr[-3000:]
    assert dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", console.stdout, re.M)) == \
        {str(i): h for i, h in hypotheses.items()}

    rows = [json.loads(line) for line in open(os.path.join(trained["data"], "valid.jsonl"))]
    model = OFASys.from_pretrained(checkpoint)
    inputs = [{"review": r["review"], "topic": r["topic"]} for r in rows]
    predictions = model.inference(data=inputs, beam=3)
    assert [p["label"] for p in predictions] == [hypotheses[i] for i in range(len(rows))]


def test_predict_writes_one_line_per_row_without_targets(trained, tmp_path):
    """ofasys-predict on rows that have no label column: one JSON line per row, in input
    order, with OFASys.inference's values; a bad row is an error naming file and line."""
    checkpoint = os.path.join(trained["save_dir"], "checkpoint_best.pt")
    rows = [json.loads(line) for line in open(os.path.join(trained["data"], "valid.jsonl"))]
    data = tmp_path / "new.jsonl"
    write_rows(data, [{"review": r["review"], "topic": r["topic"]} for r in rows[:40]])
    out = tmp_path / "predictions" / "labels.jsonl"
    predict = os.path.join(os.path.dirname(sys.executable), "ofasys-predict")
    result = subprocess.run([predict, checkpoint, str(data), "--out", str(out), "--beam", "3",
                             "--batch-size", "7"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote 40 predictions to {out}" in result.stderr
    written = [json.loads(line) for line in open(out)]
    expected = OFASys.from_pretrained(checkpoint).inference(data=str(data), beam=3)
    assert written == [{"line": i + 1, "label": p["label"]} for i, p in enumerate(expected)]
    correct = sum(w["label"] == r["label"] for w, r in zip(written, rows))
    assert correct >= 0.9 * 40

    write_rows(data, [{"review": "the soup was cold", "topic": "soup"}, {"review": "fine"}])
    result = subprocess.run([predict, checkpoint, str(data), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f"{data}, line 2" in result.stderr and "missing column 'topic'" in result.stderr


def test_python_api_zero_shot_instruction_and_free_text(trained):
    model = OFASys.from_pretrained(os.path.join(trained["save_dir"], "checkpoint_best.pt"))
    assert model.instructions == {"instruction": INSTRUCTION}
    rows = [{"review": "the soup was superb and the room was quiet", "topic": "soup"}]
    prompt = "text1 [TEXT:review] text2 [TEXT:topic] -> [TEXT:label,closed_set]"
    assert model.inference(prompt, data=rows)[0]["label"] in LABELS
    free = model.inference("[TEXT:review] -> [TEXT:label]", data=rows, max_len=5)
    assert isinstance(free[0]["label"], str)

    verdict = "[TEXT:review] -> [TEXT:verdict,closed_set]"  # a column never trained
    with pytest.raises(ValueError, match="no closed-set labels for column 'verdict'"):
        model.inference(verdict, data=rows)
    labelled = model.inference(verdict, data=rows * 3, labels={"verdict": ["good", "bad"]})
    assert {r["verdict"] for r in labelled} <= {"good", "bad"}
    with pytest.raises(DataError, match="missing column 'topic'") as info:
        model.inference(data=[{"review": "the soup was cold"}])
    assert info.value.line == 1  # the row's position in ``data``, counted from 1


def test_hydra_train_runs_a_config_from_configs(trained, repo_root, tmp_path):
    save_dir = tmp_path / "hydra_checkpoints"
    # ofasys-hydra-train is fairseq-hydra-train with this plugin's common.user_dir
    log = console_script("ofasys-hydra-train", "--config-dir",
                         os.path.join(repo_root, "configs"), "--config-name", "nli_demo",
                         f"task.data={trained['data']}",
                         f"task.instruction='{INSTRUCTION}'",  # quoted: Hydra reserves []
                         "optimization.max_epoch=1", "model.encoder_layers=1",
                         f"checkpoint.save_dir={save_dir}", cwd=tmp_path)
    # the overrides took effect: one epoch, this instruction and data, this folder
    epochs = [int(e) for e in re.findall(r"end of epoch (\d+)", log)]
    assert epochs == [1], log[-3000:]
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["optimization"]["max_epoch"] == 1
    assert state["cfg"]["model"]["encoder_layers"] == 1
    assert state["cfg"]["task"]["instruction"] == INSTRUCTION
    assert state["cfg"]["task"]["data"] == str(trained["data"])
    assert state["task_state"]["instruction"] == INSTRUCTION
    assert len(valid_metrics(log)) == 1 and "accuracy" in valid_metrics(log)[0]


LEXICON = {"red": "ruzo", "small": "piko", "cat": "mau", "dog": "kani", "sees": "vidas",
           "likes": "amas", "two": "du", "three": "tri", "old": "vec", "bird": "avi"}


def word_for_word_example(rng: random.Random) -> dict:
    words = [rng.choice(sorted(LEXICON)) for _ in range(rng.randint(3, 6))]
    return {"en": " ".join(words), "toy": " ".join(LEXICON[w] for w in words)}


def test_free_text_task_reports_bleu_and_decodes_the_same_everywhere(tmp_path):
    data, save_dir = tmp_path / "data", tmp_path / "checkpoints"
    data.mkdir()
    rng = random.Random(1)
    write_rows(data / "train.jsonl", [word_for_word_example(rng) for _ in range(1000)])
    write_rows(data / "valid.jsonl", [word_for_word_example(rng) for _ in range(60)])
    instruction = "translate word for word: [TEXT:en] -> [TEXT:toy]"
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--task", "instruction",
                  "--instruction", instruction, *MODEL_ARGS, "--max-epoch", "12",
                  "--batch-size", "16",  # ~750 updates: alignment emerges after ~500
                  "--save-dir", str(save_dir), "--best-checkpoint-metric", "bleu",
                  "--maximize-best-checkpoint-metric")
    bleu = [float(m["bleu"]) for m in valid_metrics(log)]
    # a word-for-word mapping: BLEU starts at 0; this model reaches ~100 by epoch 10
    assert bleu[0] < 10.0 and bleu[-1] >= 60.0, bleu

    checkpoint = str(save_dir / "checkpoint_best.pt")
    out = fairseq("generate", str(data), "--user-dir", USER_DIR, "--task", "instruction",
                  "--path", checkpoint, "--gen-subset", "valid", "--beam", "4", "--cpu",
                  "--batch-size", "16", "--post-process", "sentencepiece",
                  "--scoring", "sacrebleu")
    assert float(re.search(r"BLEU = ([\d.]+)", out).group(1)) >= 60.0
    hypotheses = {int(i): h for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M)}
    assert len(hypotheses) == 60
    rows = [json.loads(line) for line in open(data / "valid.jsonl")]
    model = OFASys.from_pretrained(checkpoint)
    inputs = [{"en": r["en"]} for r in rows]
    predictions = model.inference(data=inputs, beam=4)
    assert [p["toy"] for p in predictions] == [hypotheses[i] for i in range(len(rows))]
    # many small batches under a token budget, in order of length: the same, in input order
    assert model.inference(data=inputs, beam=4, max_tokens=40, batch_size=7) == predictions


def test_checkpoint_pickling_other_globals_is_refused(trained, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = torch.load(os.path.join(trained["save_dir"], "checkpoint_best.pt"))
    state["extra_state"]["payload"] = Payload()
    evil = tmp_path / "evil.pt"
    torch.save(state, evil)

    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        OFASys.from_pretrained(str(evil))
    result = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.generate", trained["data"], "--user-dir", USER_DIR,
         "--task", "instruction", "--path", str(evil), "--gen-subset", "valid", "--cpu"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    # torch's own weights_only refusal, which names the global
    assert re.search(r"(?i)unsupported global.*system", result.stderr), result.stderr[-2000:]
    assert not marker.exists()
