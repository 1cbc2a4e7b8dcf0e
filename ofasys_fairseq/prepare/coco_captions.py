"""COCO captions as distributed (cocodataset.org): ``annotations/captions_<split><year>.json``
(``images``: id, file_name; ``annotations``: image_id, caption) beside the image folders
``<split><year>/``; optionally Karpathy's split file (``dataset_coco.json``: per image its
``filepath``, ``filename``, ``cocoid`` and ``split`` train / restval / val / test), the
split captioning papers report on.

Each image becomes one row ``{"image": path, "caption": [its captions], "id": image id}``:
all references in one row (the TEXT modality trains on one per epoch and scores against
all, CIDEr-D as the COCO evaluation does).

    [IMAGE:image] what does the image describe? -> [TEXT:caption]
"""
import os
from collections import defaultdict
from typing import Dict, Iterator, List, Optional

from tqdm import tqdm

from .output import media_path, read_json, write_subset
from .summary import Summary

# official annotation split -> subset, without a Karpathy file
OFFICIAL_SPLITS = {"train": "train", "val": "valid"}
# Karpathy's split -> subset (restval joins training, as in the papers)
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "valid", "test": "test"}


def convert_coco_captions(root: str, out_dir: str, year: str = "2014",
                          karpathy: Optional[str] = None) -> Summary:
    """Write ``out_dir/{train,valid[,test]}.jsonl``.

    Args:
        root: the folder holding ``annotations/`` and the image folders.
        out_dir: where the JSONL files go.
        year: the release (``2014``, ``2017``).
        karpathy: Karpathy's ``dataset_coco.json`` (its split), or None (the official
            train / val split).
    """
    summary = Summary()
    images: Dict[int, dict] = {}  # id -> {"path", "captions", "split"}
    for split in OFFICIAL_SPLITS:
        annotations = read_json(os.path.join(root, "annotations", f"captions_{split}{year}.json"),
                                f"COCO {split}{year} captions")
        for image in annotations["images"]:
            images[image["id"]] = {"path": os.path.join(root, f"{split}{year}", image["file_name"]),
                                   "captions": [], "split": OFFICIAL_SPLITS[split]}
        for caption in annotations["annotations"]:
            if caption["image_id"] not in images:
                summary.skip("caption of an image the annotations do not list")
                continue
            images[caption["image_id"]]["captions"].append(" ".join(caption["caption"].split()))
    if karpathy is not None:
        _apply_karpathy_split(images, read_json(karpathy, "Karpathy's split file"), summary)
    by_subset: Dict[str, List[int]] = defaultdict(list)
    for image_id, image in sorted(images.items()):
        by_subset[image["split"]].append(image_id)
    for subset, ids in by_subset.items():
        write_subset(out_dir, subset, _rows(ids, images, out_dir, summary, subset), summary)
    return summary


def _apply_karpathy_split(images: Dict[int, dict], split_file: dict, summary: Summary) -> None:
    listed = set()
    for entry in split_file["images"]:
        image = images.get(entry["cocoid"])
        if image is None:
            summary.skip("Karpathy split entry for an image the annotations do not list")
            continue
        image["split"] = KARPATHY_SPLITS[entry["split"]]
        listed.add(entry["cocoid"])
    for image_id in set(images) - listed:
        summary.skip("image not in Karpathy's split")
        del images[image_id]


def _rows(ids: List[int], images: Dict[int, dict], out_dir: str, summary: Summary,
          subset: str) -> Iterator[dict]:
    for image_id in tqdm(ids, desc=subset, unit="image", disable=None):
        image = images[image_id]
        if not image["captions"]:
            summary.skip("image without captions")
            continue
        path = media_path(image["path"], out_dir, summary, "image file")
        if path is not None:
            yield {"image": path, "caption": image["captions"], "id": image_id}
