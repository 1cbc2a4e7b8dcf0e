"""Small builders and log readers shared by the tests."""
import json
import os
import random
import re
import sys
from typing import Dict, Iterable, List

import torch

import ofasys_fairseq
from ofasys_fairseq.tasks.instruction_task import InstructionConfig, InstructionTask
from ofasys_fairseq.tasks.multitask_task import MultitaskConfig, MultitaskTask

# log fields that measure time, not training
TIMING = {"wps", "ups", "train_wall", "wall", "gb_free"}
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "rug", "red", "big", "small",
         "quick", "brown", "fox", "jumps", "over", "lazy", "bird", "sings"]


def write_jsonl(path, rows: Iterable[Dict[str, object]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def sentences(count: int, seed: int, min_words: int = 2, max_words: int = 10) -> List[str]:
    """Deterministic short sentences over a tiny word list (fast sentencepiece training)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
            for _ in range(count)]


def tiny_train_command(data_dir, save_dir, instruction: str, *extra: str) -> List[str]:
    """``fairseq-train`` (as a module of this Python) for a tiny ``ofasys_tiny`` on
    ``--task instruction``, plus ``extra`` (learning rate, batches, epochs, logging)."""
    user_dir = os.path.dirname(os.path.abspath(ofasys_fairseq.__file__))
    return [sys.executable, "-m", "fairseq_cli.train", str(data_dir), "--user-dir", user_dir,
            "--task", "instruction", "--instruction", instruction, "--arch", "ofasys_tiny",
            "--embed-dim", "16", "--ffn-embed-dim", "32", "--encoder-layers", "1",
            "--decoder-layers", "1", "--criterion", "instruction_ce", "--optimizer", "adam",
            "--vocab-size", "40", "--cpu", "--num-workers", "0", "--save-dir", str(save_dir),
            *extra]


ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")  # tiny models: threads only slow them


def instruction_task(data_dir, instruction: str, **overrides) -> InstructionTask:
    """A real ``InstructionTask`` as ``fairseq-train`` would set it up, with the
    interpolated fields (seed, subsets, checkpoint dir) given explicitly."""
    fields = dict(data=str(data_dir), instruction=instruction, vocab_size=100, num_bins=8,
                  seed=1, train_subset="train",
                  save_dir=os.path.join(str(data_dir), "no-checkpoints"),
                  restore_file="checkpoint_last.pt")
    fields.update(overrides)
    return InstructionTask.setup_task(InstructionConfig(**fields))


def multitask_task(tasks, root, **overrides) -> MultitaskTask:
    """A real ``MultitaskTask`` as ``fairseq-train`` would set it up (``tasks``: name ->
    spec), with the interpolated fields given explicitly."""
    fields = dict(tasks=tasks, vocab_size=100, num_bins=8, seed=1, train_subset="train",
                  save_dir=os.path.join(str(root), "no-checkpoints"),
                  restore_file="checkpoint_last.pt")
    fields.update(overrides)
    return MultitaskTask.setup_task(MultitaskConfig(**fields))


def allowed_tokens(constraint, generated: List[int], vocab_size: int) -> List[int]:
    """A ``TokenConstraint``'s allowed next tokens after one hypothesis's ``generated``."""
    tokens = torch.tensor([list(generated) or [0]])
    mask = constraint.allowed_mask(tokens, torch.tensor([len(generated)]), vocab_size)
    return mask[0].nonzero().squeeze(1).tolist()


def allowed_in_one_batch(constraint, hypotheses: List[List[int]], vocab_size: int,
                         pad: int = 1) -> List[List[int]]:
    """``allowed_tokens`` of several hypotheses of different lengths, in one call."""
    width = max(1, max(len(h) for h in hypotheses))
    tokens = torch.tensor([list(h) + [pad] * (width - len(h)) for h in hypotheses])
    lengths = torch.tensor([len(h) for h in hypotheses])
    mask = constraint.allowed_mask(tokens, lengths, vocab_size)
    return [row.nonzero().squeeze(1).tolist() for row in mask]


def train_updates(log: str) -> dict:
    """num_updates -> (epoch, position in the epoch, the line's non-timing fields)."""
    updates = {}
    # fairseq-train: "| train_inner | epoch 001: 3 / 12 loss=..."; Hydra's logging:
    # "[train_inner][INFO] - epoch 001: 3 / 12 loss=..."
    for epoch, position, rest in re.findall(
            r"\btrain_inner\W.*?epoch (\d+): +(\d+) / \d+ (.*)$", log, re.M):
        fields = dict(pair.split("=", 1) for pair in rest.split(", "))
        updates[int(fields["num_updates"])] = (int(epoch), int(position),
                                              {k: v for k, v in fields.items()
                                               if k not in TIMING})
    return updates


def valid_lines(log: str) -> dict:
    """num_updates -> the validation line's fields (but wps)."""
    lines = {}
    for rest in re.findall(r"valid on 'valid' subset \| (.*)$", log, re.M):
        fields = dict(pair.split(" ", 1) for pair in rest.split(" | "))
        fields.pop("wps", None)
        lines[int(fields["num_updates"])] = fields
    return lines
