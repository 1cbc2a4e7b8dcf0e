"""Text to phones, offline, with eSpeak NG's grapheme-to-phoneme rules and dictionaries
(the ``espeakng-loader`` wheel bundles its library and data: ``pip install
espeakng-loader``, a dependency of this package).

    ofasys-phonemize train.jsonl train_phones.jsonl --text-column text --phone-column phones

writes every row of a ``.jsonl`` / ``.tsv`` / ``.csv`` file as JSONL with a column of IPA
phones separated by spaces (stress marks stay on their vowel: ``h iː t ˈɜː n d``; word
boundaries are not kept).
"""
import argparse
import json
import sys
from typing import List, Optional

from tqdm import tqdm

from ...data.table import DataError, Table, located
from ..espeak import ESpeak


def text_to_phones(text: str, voice: str = "en-us") -> str:
    """The IPA phones of ``text`` as eSpeak NG's ``voice`` says it, separated by spaces."""
    phones = [phone for word in ESpeak.get().phonemes(text, voice) for phone in word]
    if not phones:
        raise ValueError(f"no phones in {text!r}")
    return " ".join(phones)


def convert(source: str, destination: str, text_column: str, phone_column: str,
            voice: str = "en-us") -> int:
    """Write ``source``'s rows to ``destination`` (JSONL) with ``phone_column`` added;
    returns the number of rows. A row without text is a DataError naming it."""
    ESpeak.get().check_voice(voice)  # an option's fault, before any row
    table = Table(source)
    with open(destination, "w", encoding="utf-8") as out:
        for index in tqdm(range(len(table)), desc="phonemizing", unit="row", disable=None):
            row, line = table[index], table.line_number(index)
            if text_column not in row:
                raise DataError(f"no column '{text_column}'; this row has: "
                                f"{', '.join(map(str, row))}", source, line, text_column)
            row[phone_column] = located(lambda: text_to_phones(str(row[text_column]), voice),
                                        source, line, text_column)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(table)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a .jsonl, .tsv or .csv file")
    parser.add_argument("destination", help="the JSONL file to write")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--phone-column", default="phones")
    parser.add_argument("--voice", default="en-us", help="eSpeak NG voice (language)")
    args = parser.parse_args(argv)
    try:
        rows = convert(args.source, args.destination, args.text_column, args.phone_column,
                       args.voice)
    except (DataError, ValueError) as error:
        sys.exit(f"ofasys-phonemize: {error}")
    print(f"{rows} rows written to {args.destination}")
