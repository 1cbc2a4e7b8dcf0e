"""``ofasys-prepare``: public datasets, as distributed, to this project's JSONL files.

    ofasys-prepare librispeech ~/data/LibriSpeech demo_data/librispeech
    ofasys-prepare coco-captions | vqa | refcoco | snli-ve | glue | image-folder | table ...
    ofasys-prepare webdataset train.jsonl shards/ --subset train --media-columns image

One subcommand per source layout (a module each); each writes ``train`` / ``valid`` / ``test`` JSONL
files (media by path, not copied), shows progress, and ends with a summary of the rows
written and skipped, with the reasons. Re-running rewrites the same files. ``webdataset``
turns any data file and its media into WebDataset tar shards.
"""
from .cli import main

__all__ = ["main"]
