"""A modality defined outside the package: ``tests/fixtures/number_modality`` is a user's
``--user-dir`` package that imports ofasys_fairseq and registers NUMBER (a sequence of
numbers: a linear adapter as input, one-number frames as a continuous target). fairseq's
own tools train it both ways and ``OFASys.inference`` decodes it.

Each run is a subprocess, so the test process's registry stays the built-in one.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.test_end_to_end import USER_DIR, fairseq, valid_metrics

pytestmark = pytest.mark.slow

PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "number_modality")
sys.path.insert(0, PLUGIN)
from write_data import write_task  # noqa: E402  (the plugin's data, not the plugin itself)

RISING = "[NUMBER:values] is the sequence rising? -> [TEXT:answer,closed_set]"
COUNTDOWN = "count down from [TEXT:word] -> [NUMBER:countdown]"
TRAIN_ARGS = ["--user-dir", PLUGIN, "--task", "instruction", "--arch", "ofasys_tiny",
              "--embed-dim", "64", "--ffn-embed-dim", "128", "--attention-heads", "4",
              "--encoder-layers", "2", "--decoder-layers", "2", "--dropout", "0.0",
              "--criterion", "instruction_ce", "--optimizer", "adam", "--lr", "0.003",
              "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50", "--batch-size", "32",
              "--vocab-size", "100", "--cpu", "--seed", "1", "--num-workers", "0",
              "--log-format", "simple", "--log-interval", "20", "--no-epoch-checkpoints"]


def inference(checkpoint, rows):
    """``OFASys.inference`` in a process that imported the user's package first."""
    script = (f"import json, sys; sys.path.insert(0, {os.path.dirname(PLUGIN)!r}); "
              f"import number_modality; from ofasys_fairseq import OFASys; "
              f"print(json.dumps(OFASys.from_pretrained({str(checkpoint)!r})"
              f".inference(data={rows!r})))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_number_input_through_the_users_adapter(tmp_path):
    data = write_task(str(tmp_path), "rising")
    log = fairseq("train", str(data), *TRAIN_ARGS, "--instruction", RISING, "--max-epoch", "8",
                  "--save-dir", str(tmp_path / "ck"), "--best-checkpoint-metric", "accuracy",
                  "--maximize-best-checkpoint-metric")
    accuracy = max(float(m["accuracy"]) for m in valid_metrics(log))
    assert accuracy >= 85.0, log[-3000:]  # two answers: chance is 50% (100 in our runs, from epoch 7)
    answers = inference(tmp_path / "ck" / "checkpoint_best.pt",
                        [{"values": "1 4 9 15"}, {"values": [19, 12, 3]}, {"values": "2,3,18"}])
    assert [a["answer"] for a in answers] == ["rising", "falling", "rising"]


def test_number_output_through_the_users_head_loss_and_generator(tmp_path):
    data = write_task(str(tmp_path), "countdown")
    log = fairseq("train", str(data), *TRAIN_ARGS, "--instruction", COUNTDOWN, "--max-epoch", "40",
                  "--eval-max-len", "12", "--save-dir", str(tmp_path / "ck"),
                  "--best-checkpoint-metric", "number_mae")
    metrics = valid_metrics(log)
    best = min(metrics, key=lambda m: float(m["number_mae"]))
    # a model that ignores the word (always 3.5) is ~1.5 off; 0.09 and every length right
    # in our runs
    assert float(best["number_mae"]) <= 0.3 and float(best["number_length"]) >= 90.0, \
        log[-3000:]
    assert float(metrics[-1]["loss"]) < float(metrics[0]["loss"])

    checkpoint = tmp_path / "ck" / "checkpoint_best.pt"
    outputs = inference(checkpoint, [{"word": w} for w in ("two", "four", "six")])
    for start, output in zip((2, 4, 6), outputs):
        countdown = output["countdown"]
        assert len(countdown) == start, outputs
        assert countdown == pytest.approx(list(range(start, 0, -1)), abs=0.5), outputs

    # without the package that defines NUMBER, loading the checkpoint says what is missing
    result = subprocess.run([sys.executable, "-c", f"from ofasys_fairseq import OFASys; "
                             f"OFASys.from_pretrained({str(checkpoint)!r})"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown type 'NUMBER'" in result.stderr and "registered by importing its " \
        "package (--user-dir)" in result.stderr, result.stderr[-3000:]

    # fairseq-generate writes continuous outputs to files, which NUMBER has no form for
    result = subprocess.run([sys.executable, "-m", "fairseq_cli.generate", str(data),
                             "--user-dir", PLUGIN, "--task", "instruction", "--path",
                             str(checkpoint), "--gen-subset", "valid", "--cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "decode it with OFASys.inference" in result.stderr, result.stderr[-3000:]


def test_without_the_users_package_the_type_is_unknown(tmp_path):
    data = write_task(str(tmp_path), "rising")
    args = [USER_DIR if a == PLUGIN else a for a in TRAIN_ARGS]
    result = subprocess.run([sys.executable, "-m", "fairseq_cli.train", str(data), *args,
                             "--instruction", RISING, "--max-epoch", "1",
                             "--save-dir", str(tmp_path / "ck")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown type 'NUMBER'" in result.stderr, result.stderr[-3000:]


FRAME_DECODING = """
import json, sys
import torch
sys.path.insert(0, {plugin_parent!r})
import number_modality  # noqa: F401  (registers NUMBER)
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from ofasys_fairseq.decoding.frame_generator import generate_frames
args = options.parse_args_and_arch(options.get_training_parser(), {args!r})
cfg = convert_namespace_to_omegaconf(args)
task = tasks.setup_task(cfg.task)
task.load_dataset("valid")
model = task.build_model(cfg.model).eval()
dataset = task.datasets["valid"]
sample = dataset.collater([dataset[i] for i in range(3)])
result = {{}}
for dtype in (torch.float32, torch.bfloat16):
    frames = generate_frames(model.to(dtype), sample, "NUMBER", max_frames=100,
                             stop_threshold=1.1)  # never stops: only the cap ends a row
    result[str(dtype)] = [[f.shape[0], str(f.dtype)] for f in frames]
print(json.dumps(result))
"""


def test_frame_decoding_stays_within_the_decoder_positions_in_any_precision(tmp_path):
    """Asked for more frames than the decoder has positions, each row gets as many as fit
    (not an index error); a bfloat16 model decodes from its float frames."""
    data = write_task(str(tmp_path), "countdown", train=20, valid=5)
    args = [str(data), *TRAIN_ARGS, "--instruction", COUNTDOWN, "--max-target-positions", "8",
            "--save-dir", str(tmp_path / "ck")]
    script = FRAME_DECODING.format(plugin_parent=os.path.dirname(PLUGIN), args=args)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    decoded = json.loads(result.stdout.strip().splitlines()[-1])
    # no forced prefix: the last step reads eos and 7 frames (8 positions), predicts the 8th
    assert decoded == {"torch.float32": [[8, "torch.float32"]] * 3,
                       "torch.bfloat16": [[8, "torch.float32"]] * 3}
