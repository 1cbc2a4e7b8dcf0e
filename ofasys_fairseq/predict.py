"""``ofasys-predict CHECKPOINT DATA --out PREDICTIONS.jsonl``: decode new rows.

Every row of DATA (``.jsonl``, ``.tsv``, ``.csv`` or a WebDataset ``.tar``, as for
training; the target column is not needed) gets one JSON line in PREDICTIONS, in input
order: ``{"line": <its line in DATA>, "<target column>": <the prediction>}`` (``"key"``:
its sample's key, for a tar), the value as ``OFASys.inference``
returns it (text, a label, a box in pixels of the original image, rows of cells). A
prediction that is not JSON (a generated sound) is written to a file under
``--outputs-dir`` by its modality, and the line holds the file's path.

    ofasys-predict checkpoints/caption/checkpoint_best.pt new_images.jsonl --out captions.jsonl
"""
import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from .data.table import open_table
from .hub_interface import OFASys
from .modalities import get_modality

logger = logging.getLogger("ofasys_fairseq.predict")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ofasys-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by fairseq-train")
    parser.add_argument("data", help="rows to decode: a .jsonl, .tsv or .csv file")
    parser.add_argument("--out", required=True, help="the JSON lines file to write")
    parser.add_argument("--instruction", help="another (zero-shot) instruction over DATA's "
                                              "columns (default: the trained one)")
    parser.add_argument("--task", help="a multitask checkpoint's task to decode")
    parser.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    parser.add_argument("--max-len", type=int, help="longest output after any forced prefix "
                                                    "(tokens, or decoder steps)")
    parser.add_argument("--batch-size", type=int, default=32, help="most rows per batch")
    parser.add_argument("--max-tokens", type=int, default=8192,
                        help="most input tokens per batch (padded)")
    parser.add_argument("--labels", action="append", default=[], metavar="COLUMN=FILE",
                        help="a label set (one label per line) for a closed_set column "
                             "the checkpoint has none for; repeatable")
    parser.add_argument("--outputs-dir", help="where outputs that are files (sounds) go "
                                              "(default: OUT without its extension, + _files)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return parser.parse_args(argv)


def read_labels(specs: Sequence[str]) -> Dict[str, List[str]]:
    labels = {}
    for spec in specs:
        column, sep, path = spec.partition("=")
        if not sep or not column or not path:
            raise ValueError(f"--labels {spec!r}: expected COLUMN=FILE")
        with open(path, encoding="utf-8") as f:
            labels[column] = [line.strip() for line in f if line.strip()]
        if not labels[column]:
            raise ValueError(f"--labels {spec!r}: {path} holds no labels")
    return labels


def predict(args: argparse.Namespace) -> int:
    """Decode and write; returns the number of rows written."""
    model = OFASys.from_pretrained(args.checkpoint, device=args.device)
    plan = model.plan(args.instruction, args.task)
    table = open_table(args.data)
    predictions = model.inference(args.instruction, data=table, beam=args.beam,
                                  max_len=args.max_len, batch_size=args.batch_size,
                                  max_tokens=args.max_tokens, labels=read_labels(args.labels),
                                  task=args.task)
    column = plan.target.column
    save = get_modality(plan.target.modality).save_output
    outputs_dir = args.outputs_dir or os.path.splitext(args.out)[0] + "_files"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for index, prediction in enumerate(predictions):
            # a row of a tar shard is named by its sample's key
            where, name = (("key", table.key(index)) if hasattr(table, "key")
                           else ("line", table.line_number(index)))
            value = prediction[column]
            if not _is_json(value):  # a file (a sound): its modality writes it
                os.makedirs(outputs_dir, exist_ok=True)
                value = save(value, os.path.join(outputs_dir, str(name)))
            f.write(json.dumps({where: name, column: value}, ensure_ascii=False) + "\n")
    return len(predictions)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    args = parse_args(argv)
    try:
        count = predict(args)
    except (ValueError, OSError) as error:  # DataError is a ValueError
        sys.exit(f"ofasys-predict: {error}")
    logger.info(f"wrote {count} predictions to {args.out}")
