"""An image folder per class, as ImageNet (ILSVRC) and torchvision's ``ImageFolder`` lay
them out: ``<root>/<split>/<class folder>/<image>``.

Each image becomes a row ``{"image": path, "label": its class}``. The label is the folder
name, or its name in a ``--labels`` file: one ``<folder> <name>`` line per class, as
ImageNet's ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca``: the name before
the first comma, ``tench``).

    [IMAGE:image] what does the image describe? -> [TEXT:label,closed_set]
"""
import os
from typing import Dict, Iterator, Optional

from tqdm import tqdm

from .output import present_splits, write_subset
from .summary import Summary

DEFAULT_SPLITS = {"train": "train", "val": "valid"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def read_class_names(path: str) -> Dict[str, str]:
    names = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            folder, _, name = line.strip().partition(" ")
            if not folder:
                continue
            name = name.split(",")[0].strip()
            if not name:
                raise ValueError(f"{path}, line {number}: expected '<folder> <name>'")
            names[folder] = name
    return names


def convert_image_folder(root: str, out_dir: str, splits: Dict[str, str] = None,
                         labels: Optional[str] = None) -> Summary:
    """Write ``out_dir/<subset>.jsonl`` for each split folder of ``root`` that exists.

    Args:
        root: the folder holding one folder per split.
        out_dir: where the JSONL files go.
        splits: split folder -> subset (default ``train`` -> train, ``val`` -> valid).
        labels: a ``<folder> <name>`` file naming the classes, or None (folder names).
    """
    splits = splits or DEFAULT_SPLITS
    present = present_splits(splits, lambda folder: os.path.join(root, folder),
                             f"none of the split folders {', '.join(splits)} is in {root}")
    names = read_class_names(labels) if labels else None
    summary = Summary()
    for folder, subset in present.items():
        write_subset(out_dir, subset, _rows(os.path.join(root, folder), names, out_dir,
                                            summary), summary)
    return summary


def _rows(split_dir: str, names: Optional[Dict[str, str]], out_dir: str,
          summary: Summary) -> Iterator[dict]:
    for folder in tqdm(sorted(os.listdir(split_dir)), desc=os.path.basename(split_dir),
                       unit="class", disable=None):
        class_dir = os.path.join(split_dir, folder)
        if not os.path.isdir(class_dir):
            summary.skip("file beside the class folders")
            continue
        if names is not None and folder not in names:
            summary.skip("class folder the labels file does not name")
            continue
        for name in sorted(os.listdir(class_dir)):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                summary.skip("file that is not an image (by its extension)")
                continue
            yield {"image": os.path.relpath(os.path.join(class_dir, name), out_dir),
                   "label": names[folder] if names is not None else folder}
