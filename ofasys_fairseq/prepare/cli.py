"""The ``ofasys-prepare`` command line: one subcommand per source layout."""
import argparse
import sys
from typing import List, Optional

from .coco_captions import convert_coco_captions
from .glue import TASKS as GLUE_TASKS
from .glue import convert_glue
from .image_folder import DEFAULT_SPLITS as IMAGE_FOLDER_SPLITS
from .image_folder import convert_image_folder
from .librispeech import DEFAULT_SPLITS as LIBRISPEECH_SPLITS
from .librispeech import convert_librispeech, parse_splits
from .refcoco import convert_refcoco
from .snli_ve import convert_snli_ve
from .table import convert_table, parse_columns
from .vqa import DEFAULT_SPLITS as VQA_SPLITS
from .vqa import convert_vqa
from .webdataset_shards import write_shards


def splits_option(parser: argparse.ArgumentParser, default: dict, what: str) -> None:
    parser.add_argument("--splits", default=",".join(f"{k}={v}" for k, v in default.items()),
                        type=parse_splits, help=f"{what}=subset pairs (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofasys-prepare", description="public datasets, as distributed, to JSONL files; "
                                          "data files to WebDataset shards")
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser(
        "librispeech", help="LibriSpeech: <split>/<speaker>/<chapter>/*.trans.txt + .flac")
    command.add_argument("root", help="the LibriSpeech folder")
    command.add_argument("out_dir")
    splits_option(command, LIBRISPEECH_SPLITS, "split folder")
    command.set_defaults(run=lambda a: convert_librispeech(a.root, a.out_dir, a.splits))

    command = commands.add_parser(
        "coco-captions", help="COCO: annotations/captions_<split><year>.json + image folders")
    command.add_argument("root", help="the folder holding annotations/ and train2014/ ...")
    command.add_argument("out_dir")
    command.add_argument("--year", default="2014", help="the release (default 2014)")
    command.add_argument("--karpathy", help="Karpathy's dataset_coco.json: use its split")
    command.set_defaults(run=lambda a: convert_coco_captions(a.root, a.out_dir, a.year,
                                                             a.karpathy))

    command = commands.add_parser(
        "vqa", help="VQAv2: v2_OpenEnded_mscoco_<split>_questions.json + annotations")
    command.add_argument("root", help="the folder holding the json files and COCO's images")
    command.add_argument("out_dir")
    splits_option(command, VQA_SPLITS, "VQA split")
    command.set_defaults(run=lambda a: convert_vqa(a.root, a.out_dir, a.splits))

    command = commands.add_parser(
        "refcoco", help="RefCOCO/+/g: the refs as JSON + instances.json + train2014 images")
    command.add_argument("refs", help="the refs as a JSON list (never a pickle)")
    command.add_argument("instances", help="the dataset's instances.json")
    command.add_argument("images", help="COCO's train2014 image folder")
    command.add_argument("out_dir")
    command.set_defaults(run=lambda a: convert_refcoco(a.refs, a.instances, a.images,
                                                       a.out_dir))

    command = commands.add_parser(
        "snli-ve", help="SNLI-VE: snli_ve_{train,dev,test}.jsonl + Flickr30k images")
    command.add_argument("root", help="the folder holding snli_ve_<split>.jsonl")
    command.add_argument("images", help="Flickr30k's image folder")
    command.add_argument("out_dir")
    command.set_defaults(run=lambda a: convert_snli_ve(a.root, a.images, a.out_dir))

    command = commands.add_parser("glue", help="a GLUE task's folder of .tsv files")
    command.add_argument("task_dir", help="e.g. glue_data/RTE")
    command.add_argument("out_dir")
    command.add_argument("--task", choices=list(GLUE_TASKS),
                         help="the task (default: the folder's name)")
    command.set_defaults(run=lambda a: convert_glue(a.task_dir, a.out_dir, a.task))

    command = commands.add_parser(
        "image-folder", help="<root>/<split>/<class>/<image> (ImageNet, torchvision)")
    command.add_argument("root")
    command.add_argument("out_dir")
    splits_option(command, IMAGE_FOLDER_SPLITS, "split folder")
    command.add_argument("--labels", help="'<folder> <name>' lines naming the classes "
                                          "(ImageNet's LOC_synset_mapping.txt)")
    command.set_defaults(run=lambda a: convert_image_folder(a.root, a.out_dir, a.splits,
                                                            a.labels))

    command = commands.add_parser("table", help="any CSV/TSV file, columns chosen and renamed")
    command.add_argument("path", help="the .csv or .tsv file (a header line first)")
    command.add_argument("out_dir")
    command.add_argument("--subset", required=True, help="the output's subset (train, ...)")
    command.add_argument("--columns", required=True, type=parse_columns,
                         help="new=old pairs (or old) of the columns to keep")
    command.add_argument("--path-columns", default="", type=lambda t: [c for c in t.split(",")
                                                                       if c],
                         help="our columns holding paths relative to the input file")
    command.set_defaults(run=lambda a: convert_table(a.path, a.out_dir, a.subset, a.columns,
                                                     a.path_columns))

    command = commands.add_parser(
        "webdataset", help="a data file and its media as WebDataset tar shards")
    command.add_argument("path", help="the .jsonl, .tsv or .csv file")
    command.add_argument("out_dir")
    command.add_argument("--subset", required=True, help="the shards' subset (train, ...)")
    command.add_argument("--media-columns", default="", type=lambda t: [c for c in t.split(",")
                                                                        if c],
                         help="columns holding paths of media files (relative to the input "
                              "file) to put into the shards: image,wav")
    command.add_argument("--samples-per-shard", type=int, default=10000,
                         help="rows per tar file (default %(default)s)")
    command.set_defaults(run=lambda a: write_shards(a.path, a.out_dir, a.subset,
                                                    a.media_columns, a.samples_per_shard))
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        summary = args.run(args)
    except (OSError, ValueError) as error:
        sys.exit(f"ofasys-prepare {args.command}: {error}")
    except KeyError as error:  # a JSON file of another layout
        sys.exit(f"ofasys-prepare {args.command}: a source file lacks the field {error} of "
                 f"the official layout")
    print(summary)
