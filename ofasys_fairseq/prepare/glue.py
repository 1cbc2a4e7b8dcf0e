"""GLUE as distributed (gluebenchmark.com): one folder per task (``CoLA``, ``SST-2``,
``MRPC``, ``QQP``, ``STS-B``, ``MNLI``, ``QNLI``, ``RTE``, ``WNLI``) of tab-separated
files ``train.tsv``, ``dev.tsv``, ``test.tsv`` (MNLI: ``dev_matched.tsv``,
``dev_mismatched.tsv``, ``test_matched.tsv``, ``test_mismatched.tsv``), read as written
(no quoting: GLUE's text holds bare quotes).

Each line becomes a row with the task's text columns under plain names and a ``label``
(none in the test files, which are for prediction): 0/1 labels as words (CoLA
unacceptable/acceptable, SST-2 negative/positive, MRPC not_equivalent/equivalent, QQP
not_duplicate/duplicate, WNLI not_entailment/entailment), STS-B's score as written.

    [TEXT:sentence1] [TEXT:sentence2] -> [TEXT:label,closed_set]     (RTE)
"""
import csv
import os
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

from tqdm import tqdm

from .output import present_splits, write_subset
from .summary import Summary


class GlueTask(NamedTuple):
    texts: Dict[str, str]  # our column -> the file's column
    label: str  # the file's label column
    words: Optional[Tuple[str, str]] = None  # names of labels 0 and 1
    # the training and development files have no header line (CoLA): their columns
    columns: Optional[Sequence[str]] = None


TASKS = {
    "CoLA": GlueTask({"sentence": "sentence"}, "label", ("unacceptable", "acceptable"),
                     ("source", "label", "original_label", "sentence")),
    "SST-2": GlueTask({"sentence": "sentence"}, "label", ("negative", "positive")),
    "MRPC": GlueTask({"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality",
                     ("not_equivalent", "equivalent")),
    "QQP": GlueTask({"question1": "question1", "question2": "question2"}, "is_duplicate",
                    ("not_duplicate", "duplicate")),
    "STS-B": GlueTask({"sentence1": "sentence1", "sentence2": "sentence2"}, "score"),
    "MNLI": GlueTask({"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label"),
    "QNLI": GlueTask({"question": "question", "sentence": "sentence"}, "label"),
    "RTE": GlueTask({"sentence1": "sentence1", "sentence2": "sentence2"}, "label"),
    "WNLI": GlueTask({"sentence1": "sentence1", "sentence2": "sentence2"}, "label",
                     ("not_entailment", "entailment")),
}
FILES = {"train": "train", "dev": "valid", "test": "test", "dev_matched": "valid",
         "dev_mismatched": "valid_mismatched", "test_matched": "test",
         "test_mismatched": "test_mismatched"}


def convert_glue(task_dir: str, out_dir: str, task: Optional[str] = None) -> Summary:
    """Write ``out_dir/<subset>.jsonl`` for each of the task's files.

    Args:
        task_dir: the task's folder (``.../glue_data/RTE``).
        out_dir: where the JSONL files go.
        task: the GLUE task (default: the folder's name).
    """
    task = task or os.path.basename(os.path.normpath(task_dir))
    if task not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}: expected one of {', '.join(TASKS)} "
                         f"(the folder's name, or --task)")
    present = present_splits(FILES, lambda name: os.path.join(task_dir, f"{name}.tsv"),
                             f"no {task} .tsv files (train.tsv, dev.tsv, ...) in {task_dir}")
    summary = Summary()
    for name, subset in present.items():
        write_subset(out_dir, subset, _rows(os.path.join(task_dir, f"{name}.tsv"), TASKS[task],
                                            name.startswith("test"), summary), summary)
    return summary


def _rows(path: str, task: GlueTask, test: bool, summary: Summary) -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        lines = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(task.columns) if task.columns and not test else next(lines)
        wanted = list(task.texts.values()) + ([] if test else [task.label])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ValueError(f"{path}: no column(s) {', '.join(missing)} in its header {header}")
        for fields in tqdm(lines, desc=os.path.basename(path), unit="row", disable=None):
            if len(fields) != len(header):
                summary.skip("line with a wrong number of fields")
                continue
            cells = dict(zip(header, fields))
            row = {ours: cells[theirs] for ours, theirs in task.texts.items()}
            if not test:
                label = cells[task.label]
                if task.words is not None:
                    if label not in ("0", "1"):
                        summary.skip("label that is not 0 or 1")
                        continue
                    label = task.words[int(label)]
                row["label"] = label
            yield row
