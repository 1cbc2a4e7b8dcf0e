"""RefCOCO, RefCOCO+ and RefCOCOg (referring expressions on COCO train2014 images) from
their JSON files: the refs (a list of ``ref_id``, ``ann_id``, ``image_id``, ``split``,
``sentences``: the same records as the ``refs(unc).p`` / ``refs(umd).p`` releases) and
``instances.json`` (COCO's format: ``images`` with ``file_name``, ``annotations`` with
``bbox`` = x, y, width, height in pixels), beside COCO's ``train2014/`` images.

The refs are distributed as Python pickles; a pickle runs code when it is read, so this
converter reads JSON only: export the refs to JSON once where you trust the file (for
example ``json.dump(pickle.load(f), out)``), or use a JSON release of them.

Each expression becomes a row ``{"image", "text": the expression, "region": "x0,y0,x1,y1"
in pixels, "ref_id"}``; splits as distributed (``train``, ``val`` -> ``valid``,
``testA``, ``testB``, ``test``).

    [IMAGE:image] which region does the text " [TEXT:text] " describe? -> [BOX:region]
"""
import os
from collections import defaultdict
from typing import Dict, Iterator, List

from tqdm import tqdm

from .output import media_path, read_json, write_subset
from .summary import Summary

SUBSETS = {"train": "train", "val": "valid", "testA": "testA", "testB": "testB", "test": "test"}


def convert_refcoco(refs: str, instances: str, images: str, out_dir: str) -> Summary:
    """Write ``out_dir/<subset>.jsonl`` per split of the refs.

    Args:
        refs: the refs as JSON (a list of ref records).
        instances: the dataset's ``instances.json``.
        images: COCO's ``train2014`` image folder.
        out_dir: where the JSONL files go.
    """
    if refs.endswith(".p") or refs.endswith(".pkl"):
        raise ValueError(f"{refs}: a pickle runs code when it is read, so it is not opened "
                         f"here; give the refs as JSON (see ofasys_fairseq/prepare/refcoco.py)")
    records = read_json(refs, "the refs (a JSON list of ref records)")
    coco = read_json(instances, "instances.json")
    boxes = {a["id"]: a["bbox"] for a in coco["annotations"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    summary = Summary()
    by_subset: Dict[str, List[dict]] = defaultdict(list)
    for ref in records:
        if ref["split"] not in SUBSETS:
            summary.skip(f"ref of an unknown split {ref['split']!r}")
            continue
        by_subset[SUBSETS[ref["split"]]].append(ref)
    for subset, subset_refs in by_subset.items():
        write_subset(out_dir, subset, _rows(subset_refs, boxes, files, images, out_dir, summary,
                                            subset), summary)
    return summary


def _rows(refs: List[dict], boxes, files, images: str, out_dir: str, summary: Summary,
          subset: str) -> Iterator[dict]:
    for ref in tqdm(refs, desc=subset, unit="ref", disable=None):
        if ref["ann_id"] not in boxes or ref["image_id"] not in files:
            summary.skip("ref whose annotation or image instances.json does not list")
            continue
        x, y, width, height = boxes[ref["ann_id"]]
        if width <= 0 or height <= 0:
            summary.skip("ref whose box is empty")
            continue
        path = media_path(os.path.join(images, files[ref["image_id"]]), out_dir, summary,
                          "image file")
        if path is None:
            continue
        region = ",".join(f"{v:g}" for v in (x, y, x + width, y + height))
        for sentence in ref["sentences"]:
            yield {"image": path, "text": " ".join(sentence["sent"].split()), "region": region,
                   "ref_id": ref["ref_id"]}
