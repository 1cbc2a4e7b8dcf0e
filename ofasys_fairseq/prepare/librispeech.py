"""LibriSpeech (openslr.org/12) as distributed: ``<split>/<speaker>/<chapter>/`` folders
holding ``<speaker>-<chapter>.trans.txt`` (one ``<utterance-id> TRANSCRIPT`` line per
utterance) beside ``<utterance-id>.flac``.

Each utterance becomes a row ``{"wav": path, "text": transcript, "speaker", "chapter",
"id"}``, the path relative to the output file; transcripts stay as distributed (upper
case, no punctuation: WER on LibriSpeech is reported on them).
"""
import glob
import os
from typing import Dict, Iterator, List, Tuple

from tqdm import tqdm

from .output import present_splits, write_subset
from .summary import Summary

# split folder -> output subset, the usual recipe (the other splits can be mapped too)
DEFAULT_SPLITS = {"train-clean-100": "train", "dev-clean": "valid", "test-clean": "test"}


def parse_splits(text: str) -> Dict[str, str]:
    """``"train-clean-100=train,dev-clean=valid"`` -> a mapping."""
    splits = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        folder, sep, subset = (part.strip() for part in item.partition("="))
        if not (sep and folder and subset):
            raise ValueError(f"--splits: expected 'folder=subset', got {item!r}")
        splits[folder] = subset
    return splits


def convert_librispeech(root: str, out_dir: str, splits: Dict[str, str] = None) -> Summary:
    """Write ``out_dir/<subset>.jsonl`` for each split folder of ``root`` that exists.

    Args:
        root: the ``LibriSpeech`` folder (holding ``train-clean-100/`` ...).
        out_dir: where the JSONL files go.
        splits: split folder -> subset name (default ``DEFAULT_SPLITS``).
    """
    splits = splits or DEFAULT_SPLITS
    present = present_splits(splits, lambda folder: os.path.join(root, folder),
                             f"none of the split folders {', '.join(splits)} is in {root}")
    summary = Summary()
    for folder, subset in present.items():
        write_subset(out_dir, subset, _rows(os.path.join(root, folder), out_dir, summary),
                     summary)
    return summary


def _rows(split_dir: str, out_dir: str, summary: Summary) -> Iterator[dict]:
    transcripts = sorted(glob.glob(os.path.join(split_dir, "*", "*", "*.trans.txt")))
    listed = set()
    for transcript in tqdm(transcripts, desc=os.path.basename(split_dir), unit="chapter",
                           disable=None):
        chapter_dir = os.path.dirname(transcript)
        for utterance, text, problem in _utterances(transcript):
            listed.add(os.path.join(chapter_dir, f"{utterance}.flac"))
            if problem:
                summary.skip(problem)
                continue
            flac = os.path.join(chapter_dir, f"{utterance}.flac")
            if not os.path.isfile(flac):
                summary.skip("transcript line without its .flac file")
                continue
            speaker, chapter = utterance.split("-")[:2]
            yield {"wav": os.path.relpath(flac, out_dir), "text": text, "speaker": speaker,
                   "chapter": chapter, "id": utterance}
    unlisted = set(glob.glob(os.path.join(split_dir, "*", "*", "*.flac"))) - listed
    for _ in unlisted:
        summary.skip(".flac file without a transcript line")


def _utterances(transcript: str) -> List[Tuple[str, str, str]]:
    """(utterance id, text, problem or "") per line of a ``.trans.txt`` file."""
    found = []
    with open(transcript, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            utterance, _, text = line.strip().partition(" ")
            if not utterance:
                continue
            if not text.strip():
                found.append((utterance, "", "transcript line without text"))
            else:
                found.append((utterance, " ".join(text.split()), ""))
    return found
