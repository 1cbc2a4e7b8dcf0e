"""Deterministic synthetic tasks for the demo and the tests (no download).

* ``nli``: premise / hypothesis pairs whose label (yes / no / maybe) follows
  from the words: dropping the adjective keeps the meaning (yes), negating the
  verb contradicts it (no), adding a time is unknowable (maybe).
* ``translation``: English-like phrases into a made-up language with its own
  lexicon and adjective-after-noun order (free text, scored with BLEU).

    python scripts/demo_data.py OUT_DIR [--train 3000 --valid 300 --seed 1]
"""
import argparse
import json
import os
import random
from typing import Dict, List

ADJECTIVES = ["red", "small", "old", "happy", "quiet", "brown"]
ANIMALS = ["cat", "dog", "horse", "bird", "fox", "goat"]
VERBS = ["sleeps", "eats", "plays", "waits", "sings"]
PLACES = ["garden", "house", "park", "barn", "forest", "river"]
TIMES = ["at night", "in the morning", "every day"]

NLI_INSTRUCTION = ("can text1 [TEXT:premise] imply text2 [TEXT:hypothesis]? -> can text1 "
                   "[TEXT:premise,no_loss] imply text2 [TEXT:hypothesis,no_loss]? "
                   "[TEXT:label,closed_set]")
TRANSLATION_INSTRUCTION = "translate to the toy language: [TEXT:en] -> [TEXT:toy]"

LEXICON = {
    "the": "lo", "a": "na", "red": "ruzo", "small": "piko", "old": "vec", "happy": "feli",
    "quiet": "tasi", "brown": "bruno", "cat": "mau", "dog": "kani", "horse": "kava",
    "bird": "avi", "fox": "vulpo", "goat": "kapra", "sees": "vidas", "likes": "amas",
    "follows": "sekvas", "one": "unu", "two": "du", "three": "tri",
}


def nli_example(rng: random.Random) -> Dict[str, str]:
    adjective, animal, verb, place = (rng.choice(ADJECTIVES), rng.choice(ANIMALS),
                                      rng.choice(VERBS), rng.choice(PLACES))
    premise = f"the {adjective} {animal} {verb} in the {place}"
    label = rng.choice(["yes", "no", "maybe"])
    if label == "yes":
        hypothesis = f"the {animal} {verb} in the {place}"
    elif label == "no":
        negated = rng.choice([f"does not {verb[:-1]}", f"never {verb}"])
        hypothesis = f"the {animal} {negated} in the {place}"
    else:
        hypothesis = f"the {animal} {verb} in the {place} {rng.choice(TIMES)}"
    return {"premise": premise, "hypothesis": hypothesis, "label": label}


def translation_example(rng: random.Random) -> Dict[str, str]:
    def noun_phrase(words: List[str]) -> List[str]:
        return [LEXICON[words[0]], LEXICON[words[2]], LEXICON[words[1]]]  # noun before adjective

    subject = [rng.choice(["the", "a"]), rng.choice(ADJECTIVES), rng.choice(ANIMALS)]
    verb = rng.choice(["sees", "likes", "follows"])
    obj = [rng.choice(["one", "two", "three"]), rng.choice(ADJECTIVES), rng.choice(ANIMALS)]
    english = " ".join(subject + [verb] + obj)
    toy = " ".join(noun_phrase(subject) + [LEXICON[verb]] + noun_phrase(obj))
    return {"en": english, "toy": toy}


TASKS = {
    "nli": (nli_example, NLI_INSTRUCTION),
    "translation": (translation_example, TRANSLATION_INSTRUCTION),
}


def write_task(out_dir: str, name: str, train: int, valid: int, seed: int) -> str:
    """Write ``out_dir/name/{train,valid}.jsonl`` and return the task's directory."""
    make_example, _ = TASKS[name]
    rng = random.Random(f"{name}:{seed}")
    task_dir = os.path.join(out_dir, name)
    os.makedirs(task_dir, exist_ok=True)
    for split, count in (("train", train), ("valid", valid)):
        with open(os.path.join(task_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(json.dumps(make_example(rng)) + "\n")
    return task_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--valid", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for name in TASKS:
        print(write_task(args.out_dir, name, args.train, args.valid, args.seed))


if __name__ == "__main__":
    main()
