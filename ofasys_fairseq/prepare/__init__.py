"""``ofasys-prepare``: public datasets, as distributed, to this project's JSONL files.

    ofasys-prepare librispeech ~/data/LibriSpeech demo_data/librispeech
    ofasys-prepare coco-captions | vqa | refcoco | snli-ve | glue | image-folder | table ...

One subcommand per source layout (a module each); each writes ``train`` / ``valid`` / ``test`` JSONL
files (media by path, not copied), shows progress, and ends with a summary of the rows
written and skipped, with the reasons. Re-running rewrites the same files.
"""
from .cli import main

__all__ = ["main"]
