"""The ``ofasys-prepare`` command line: one subcommand per source layout."""
import argparse
import sys
from typing import List, Optional

from .librispeech import DEFAULT_SPLITS, convert_librispeech, parse_splits


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ofasys-prepare", description="public datasets, as distributed, to JSONL files")
    commands = parser.add_subparsers(dest="command", required=True)
    librispeech = commands.add_parser(
        "librispeech", help="LibriSpeech: <split>/<speaker>/<chapter>/*.trans.txt + .flac")
    librispeech.add_argument("root", help="the LibriSpeech folder")
    librispeech.add_argument("out_dir")
    librispeech.add_argument("--splits", default=",".join(f"{k}={v}" for k, v in
                                                           DEFAULT_SPLITS.items()),
                             help="split folder=subset pairs (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        summary = convert_librispeech(args.root, args.out_dir, parse_splits(args.splits))
    except (OSError, ValueError) as error:
        sys.exit(f"ofasys-prepare {args.command}: {error}")
    print(summary)
