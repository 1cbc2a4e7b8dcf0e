"""SNLI-VE (visual entailment, github.com/necla-ml/SNLI-VE) as distributed:
``snli_ve_{train,dev,test}.jsonl`` (``Flickr30K_ID``, ``sentence2`` the hypothesis,
``gold_label``, ``pairID``), with Flickr30k's images ``<images>/<Flickr30K_ID>.jpg``.

Each pair becomes a row ``{"image", "hypothesis", "label", "pair_id"}``, the label one of
entailment / neutral / contradiction (pairs without a gold label are skipped, counted).

    [IMAGE:image] does the image describe " [TEXT:hypothesis] "? -> [TEXT:label,closed_set]
"""
import json
import os
from typing import Iterator

from tqdm import tqdm

from .output import media_path, present_splits, write_subset
from .summary import Summary

SPLITS = {"train": "train", "dev": "valid", "test": "test"}
LABELS = ("entailment", "neutral", "contradiction")


def convert_snli_ve(root: str, images: str, out_dir: str) -> Summary:
    """Write ``out_dir/{train,valid,test}.jsonl`` from the split files present in ``root``.

    Args:
        root: the folder holding ``snli_ve_<split>.jsonl``.
        images: Flickr30k's image folder.
        out_dir: where the JSONL files go.
    """
    present = present_splits(SPLITS, lambda split: os.path.join(root, f"snli_ve_{split}.jsonl"),
                             f"no snli_ve_{{train,dev,test}}.jsonl in {root}")
    summary = Summary()
    for split, subset in present.items():
        write_subset(out_dir, subset, _rows(os.path.join(root, f"snli_ve_{split}.jsonl"), images,
                                            out_dir, summary), summary)
    return summary


def _rows(path: str, images: str, out_dir: str, summary: Summary) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(tqdm(f, desc=os.path.basename(path), unit="pair",
                                           disable=None), 1):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON: {error}") from None
            if pair.get("gold_label") not in LABELS:
                summary.skip("pair without a gold label")
                continue
            image = media_path(os.path.join(images, f"{pair['Flickr30K_ID']}.jpg"), out_dir,
                               summary, "image file")
            if image is not None:
                yield {"image": image, "hypothesis": " ".join(pair["sentence2"].split()),
                       "label": pair["gold_label"], "pair_id": pair["pairID"]}
