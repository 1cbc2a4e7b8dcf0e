"""Fine-tuning the demo's generalist on a task it never saw (``--finetune-from-model``):
the checkpoint's vocabulary is reused, never retrained (its ids untouched, symbols the new
task needs appended), its weights are the start, and it beats training from scratch on
the same budget."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from demo_data import write_digits, write_task
from ofasys_fairseq import OFASys
from tests.test_end_to_end import USER_DIR, fairseq, valid_metrics, write_rows

pytestmark = pytest.mark.slow

# configs/multitask_demo.yaml's model and optimizer, as fairseq-train flags
DEMO_MODEL_ARGS = ["--arch", "ofasys_tiny", "--embed-dim", "128", "--ffn-embed-dim", "256",
                   "--attention-heads", "4", "--encoder-layers", "2", "--decoder-layers", "2",
                   "--dropout", "0.0", "--criterion", "instruction_ce", "--label-smoothing",
                   "0.1", "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler",
                   "inverse_sqrt", "--warmup-updates", "20", "--batch-size", "32",
                   "--num-bins", "16", "--cpu",
                   "--seed", "3", "--num-workers", "0", "--log-format", "simple",
                   "--no-epoch-checkpoints"]
# the demo's text tasks and one of its vision tasks; the others are removed from the config
KEPT_TASKS = ("nli", "translation", "digits")
OTHER_TASKS = ("shapes_caption", "shapes_vqa", "shapes_grounding", "shapes_region_caption",
               "table_to_text", "table_qa", "text_to_sql", "sudoku")
REVERSED = "translate to the toy language, last word first: [TEXT:en] -> [TEXT:toy]"


@pytest.fixture(scope="module")
def generalist(tmp_path_factory, repo_root):
    """configs/multitask_demo.yaml, as make demo trains it, on three of its tasks (text and
    images) and a smaller budget (150 rounds of the three): its translation reaches BLEU
    100."""
    root = tmp_path_factory.mktemp("generalist")
    for task in ("nli", "translation"):
        write_task(str(root / "data"), task, train=1000, valid=60, seed=1)
    write_digits(str(root / "data"), train=300, valid=20)
    result = subprocess.run(
        [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir",
         os.path.join(repo_root, "configs"), "--config-name", "multitask_demo",
         *(f"~task.tasks.{task}" for task in OTHER_TASKS),
         *(f"task.tasks.{task}.data={root / 'data' / task}" for task in KEPT_TASKS),
         "optimization.max_update=150", "dataset.disable_validation=true",
         f"checkpoint.save_dir={root / 'checkpoints'}", f"common.user_dir={USER_DIR}"],
        cwd=str(root), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return root / "checkpoints" / "checkpoint_last.pt"


def reversed_bleu(data, save_dir, *start):
    """BLEU of the reversed-order task after 40 updates, and the training log."""
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--instruction", REVERSED,
                  *DEMO_MODEL_ARGS, "--max-update", "40", "--log-interval", "10",
                  "--save-dir", str(save_dir), *start)
    return float(valid_metrics(log)[-1]["bleu"]), log


def test_finetuning_reuses_the_vocabulary_and_beats_training_from_scratch(generalist, tmp_path):
    """A task the generalist never saw (its translation, in reverse word order, under
    another instruction): from the generalist it reaches BLEU 100 in 40 updates, from
    scratch ~10."""
    write_task(str(tmp_path), "translation", train=400, valid=40, seed=7)
    for split in ("train", "valid"):
        path = tmp_path / "translation" / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            row["toy"] = " ".join(reversed(row["toy"].split()))
        if split == "train":
            rows[0]["en"] += " café"  # a character the generalist's vocabulary never saw
        write_rows(path, rows)

    data = tmp_path / "translation"
    tuned, log = reversed_bleu(data, tmp_path / "tuned", "--finetune-from-model", str(generalist))
    scratch, _ = reversed_bleu(data, tmp_path / "scratch")
    assert tuned > scratch + 10, (tuned, scratch)

    saved = torch.load(generalist, map_location="cpu")["task_state"]["vocabulary"]["symbols"]
    model = OFASys.from_pretrained(str(tmp_path / "tuned" / "checkpoint_last.pt"))
    assert list(model.task.dictionary.symbols) == list(saved)  # never retrained, nothing added
    assert re.search(r"\d+ of the training data's \d+ text tokens are <unk> to the checkpoint's "
                     r"vocabulary", log)
    # every weight from the generalist; its image adapter is left out
    assert re.search(r"fine-tuning: 0 tensors start fresh; left out, unused by this task: "
                     r"encoder\.adapters\.image_vit", log)


def test_finetuning_with_other_location_bins_is_refused_before_training(generalist, tmp_path):
    """The generalist's <bin_k> tokens mean k/15 of the image: a run with fairseq-train's
    default 1000 bins would silently give them other places."""
    write_task(str(tmp_path), "translation", train=8, valid=2, seed=7)
    args = list(DEMO_MODEL_ARGS)
    args[args.index("--num-bins") + 1] = "1000"
    result = subprocess.run([sys.executable, "-m", "fairseq_cli.train",
                             str(tmp_path / "translation"), "--user-dir", USER_DIR,
                             "--instruction", REVERSED, *args, "--save-dir", str(tmp_path),
                             "--finetune-from-model", str(generalist)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert (f"fine-tuning {generalist}: its model was trained with --num-bins 16 (this run: "
            f"1000); pass the checkpoint's value") in result.stderr
    assert "begin training" not in result.stdout + result.stderr


def test_finetuning_on_a_new_modality_appends_its_symbols(generalist, tmp_path):
    """A PHONE target the generalist never decoded: its phone symbols are appended to the
    checkpoint's dictionary, whose ids stay where they were."""
    data = tmp_path / "phones"
    data.mkdir()
    words = {"red": "r ɛ d", "bed": "b ɛ d", "bad": "b æ d", "rad": "r æ d"}
    rows = [{"word": w, "phones": p} for w, p in words.items()] * 8
    write_rows(data / "train.jsonl", rows)
    write_rows(data / "valid.jsonl", rows[:4])
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--instruction",
                  "[TEXT:word] -> [PHONE:phones]", *DEMO_MODEL_ARGS, "--max-update", "2",
                  "--save-dir", str(tmp_path / "tuned"), "--finetune-from-model", str(generalist))
    assert "fine-tuning: " in log and "tensors start fresh" in log
    saved = torch.load(generalist, map_location="cpu")["task_state"]["vocabulary"]["symbols"]
    tuned = torch.load(tmp_path / "tuned" / "checkpoint_last.pt", map_location="cpu")
    symbols = tuned["task_state"]["vocabulary"]["symbols"]
    assert symbols[:len(saved)] == saved
    assert sorted(symbols[len(saved):]) == sorted(f"<phone:{p}>" for p in "rɛdbæ")
    # the old rows of the embedding start from the generalist's (two updates moved them a
    # little), the new ones are initialised
    before = torch.load(generalist, map_location="cpu")["model"]["decoder.embed_tokens.weight"]
    after = tuned["model"]["decoder.embed_tokens.weight"]
    assert after.shape == (len(symbols), before.shape[1])
    assert torch.cosine_similarity(after[:len(before)].flatten(), before.flatten(), dim=0) > 0.9
