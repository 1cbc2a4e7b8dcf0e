"""Fine-tuning a trained checkpoint on a task it never saw (``--finetune-from-model``):
the checkpoint's vocabulary is reused, never retrained (its ids untouched, symbols the new
task needs appended), its weights are the start, and it beats training from scratch on
the same budget."""
import random
import re

import pytest
import torch

from ofasys_fairseq import OFASys
from tests.test_end_to_end import (MODEL_ARGS, USER_DIR, fairseq, valid_metrics,
                                   word_for_word_example, write_rows)

pytestmark = pytest.mark.slow

REVERSED = "translate word for word, last word first: [TEXT:en] -> [TEXT:toy]"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A small model that learnt word-for-word translation (BLEU 100 after 12 epochs)."""
    root = tmp_path_factory.mktemp("pretrained")
    rng = random.Random(1)
    write_rows(root / "train.jsonl", [word_for_word_example(rng) for _ in range(1000)])
    write_rows(root / "valid.jsonl", [word_for_word_example(rng) for _ in range(60)])
    fairseq("train", str(root), "--user-dir", USER_DIR, "--task", "instruction",
            "--instruction", "translate word for word: [TEXT:en] -> [TEXT:toy]", *MODEL_ARGS,
            "--max-epoch", "12", "--batch-size", "16", "--save-dir", str(root / "checkpoints"),
            "--no-epoch-checkpoints")
    return root / "checkpoints" / "checkpoint_last.pt"


def reversed_bleu(data, save_dir, *start):
    """BLEU of the reversed-order task after 150 updates, and the training log."""
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--instruction", REVERSED,
                  *MODEL_ARGS, "--batch-size", "16", "--max-update", "150",
                  "--save-dir", str(save_dir), *start)
    return float(valid_metrics(log)[-1]["bleu"]), log


def test_finetuning_reuses_the_vocabulary_and_beats_training_from_scratch(pretrained, tmp_path):
    """A task the checkpoint never saw (the same words, in reverse order, under another
    instruction): from the checkpoint it reaches BLEU ~27 in 150 updates, from scratch ~0."""
    data = tmp_path / "reversed"
    data.mkdir()
    rng = random.Random(7)
    rows = []
    for _ in range(440):
        row = word_for_word_example(rng)
        rows.append({"en": row["en"], "toy": " ".join(reversed(row["toy"].split()))})
    rows[0]["en"] += " café"  # a character the checkpoint's vocabulary never saw
    write_rows(data / "train.jsonl", rows[:400])
    write_rows(data / "valid.jsonl", rows[400:])

    tuned, log = reversed_bleu(data, tmp_path / "tuned", "--finetune-from-model", str(pretrained))
    scratch, _ = reversed_bleu(data, tmp_path / "scratch")
    assert tuned > scratch + 10, (tuned, scratch)

    saved = torch.load(pretrained, map_location="cpu")["task_state"]["vocabulary"]["symbols"]
    model = OFASys.from_pretrained(str(tmp_path / "tuned" / "checkpoint_last.pt"))
    assert list(model.task.dictionary.symbols) == list(saved)  # never retrained, nothing added
    assert re.search(r"\d+ of the training data's \d+ text tokens are <unk> to the checkpoint's "
                     r"vocabulary", log)
    assert "fine-tuning: 0 tensors start fresh" in log  # every weight from the checkpoint


def test_finetuning_on_a_new_modality_appends_its_symbols(pretrained, tmp_path):
    """A PHONE target the checkpoint never decoded: its phone symbols are appended to the
    checkpoint's dictionary, whose ids stay where they were."""
    data = tmp_path / "phones"
    data.mkdir()
    words = {"red": "r ɛ d", "bed": "b ɛ d", "bad": "b æ d", "rad": "r æ d"}
    rows = [{"word": w, "phones": p} for w, p in words.items()] * 8
    write_rows(data / "train.jsonl", rows)
    write_rows(data / "valid.jsonl", rows[:4])
    log = fairseq("train", str(data), "--user-dir", USER_DIR, "--instruction",
                  "[TEXT:word] -> [PHONE:phones]", *MODEL_ARGS, "--max-update", "2",
                  "--save-dir", str(tmp_path / "tuned"), "--finetune-from-model", str(pretrained))
    assert "fine-tuning: " in log and "tensors start fresh" in log
    saved = torch.load(pretrained, map_location="cpu")["task_state"]["vocabulary"]["symbols"]
    tuned = torch.load(tmp_path / "tuned" / "checkpoint_last.pt", map_location="cpu")
    symbols = tuned["task_state"]["vocabulary"]["symbols"]
    assert symbols[:len(saved)] == saved
    assert sorted(symbols[len(saved):]) == sorted(f"<phone:{p}>" for p in "rɛdbæ")
    # the old rows of the embedding start from the checkpoint's (two updates moved them a
    # little), the new ones are initialised
    before = torch.load(pretrained, map_location="cpu")["model"]["decoder.embed_tokens.weight"]
    after = tuned["model"]["decoder.embed_tokens.weight"]
    assert after.shape == (len(symbols), before.shape[1])
    assert torch.cosine_similarity(after[:len(before)].flatten(), before.flatten(), dim=0) > 0.9
