"""VQAv2 as distributed (visualqa.org): ``v2_OpenEnded_mscoco_<split>_questions.json``
(``questions``: image_id, question, question_id) and ``v2_mscoco_<split>_annotations.json``
(``annotations``: question_id, ten ``answers``), with COCO's image folders ``<split>/``
holding ``COCO_<split>_<image id, 12 digits>.jpg``.

Each question becomes a row ``{"image", "question", "answers": [the ten answers],
"question_id"}``; the answers as the annotators gave them (the ``vqa_score`` metric
applies VQA's own normalization). A split without an annotations file (test2015) gives
rows without answers, for prediction.

    [IMAGE:image] [TEXT:question] -> [TEXT:answers]     (--eval-metrics vqa_score)
"""
import os
from typing import Dict, Iterator, List

from tqdm import tqdm

from .output import media_path, read_json, write_subset
from .summary import Summary

DEFAULT_SPLITS = {"train2014": "train", "val2014": "valid"}


def convert_vqa(root: str, out_dir: str, splits: Dict[str, str] = None) -> Summary:
    """Write ``out_dir/<subset>.jsonl`` for each split.

    Args:
        root: the folder holding the question and annotation files and the image folders.
        out_dir: where the JSONL files go.
        splits: VQA split name (``train2014``, ``val2014``, ``test2015``) -> subset.
    """
    summary = Summary()
    for split, subset in (splits or DEFAULT_SPLITS).items():
        questions = read_json(os.path.join(root, f"v2_OpenEnded_mscoco_{split}_questions.json"),
                              f"VQAv2 {split} questions")["questions"]
        annotations_file = os.path.join(root, f"v2_mscoco_{split}_annotations.json")
        answers = None
        if os.path.isfile(annotations_file):
            answers = {a["question_id"]: [answer["answer"] for answer in a["answers"]]
                       for a in read_json(annotations_file, f"VQAv2 {split} annotations")
                       ["annotations"]}
        write_subset(out_dir, subset, _rows(questions, answers, root, split, out_dir, summary),
                     summary)
    return summary


def _rows(questions: List[dict], answers, root: str, split: str, out_dir: str,
          summary: Summary) -> Iterator[dict]:
    for question in tqdm(questions, desc=split, unit="question", disable=None):
        image = os.path.join(root, split, f"COCO_{split}_{question['image_id']:012d}.jpg")
        row = {"image": media_path(image, out_dir, summary, "image file"),
               "question": " ".join(question["question"].split()),
               "question_id": question["question_id"]}
        if row["image"] is None:
            continue
        if answers is not None:
            if question["question_id"] not in answers:
                summary.skip("question without annotated answers")
                continue
            row["answers"] = answers[question["question_id"]]
        yield row
