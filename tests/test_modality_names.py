"""Modalities are plug-ins: outside ``ofasys_fairseq/modalities/`` no code names one.

The core (instruction parser, plan, dataset, collater, encoder, criterion, task,
generate output, ``OFASys.inference``, ``ofasys-validate``) goes through the registry.
Checked on the code's tokens: no string that is a modality's name (``"IMAGE"``), no
identifier that speaks of one (``image_size``, ``decode_box``). Comments and prose in
docstrings may give examples. The dataset converters (``prepare/``: COCO's images,
LibriSpeech's sounds) are outside the core: each knows its one dataset's layout and
writes data files, as a script would.
"""
import io
import os
import re
import tokenize

import ofasys_fairseq
from ofasys_fairseq.modalities import registered_modalities

PACKAGE = os.path.dirname(os.path.abspath(ofasys_fairseq.__file__))
MODALITIES = os.path.join(PACKAGE, "modalities")
CONVERTERS = os.path.join(PACKAGE, "prepare")
# words of identifiers (snake_case or CamelCase parts) that speak of a modality
MODALITY_WORDS = {"image", "images", "box", "boxes", "bin", "bins", "pixel", "pixels", "patch",
                  "patches", "resnet", "vit", "audio", "video", "phone", "phones", "struct",
                  "motion", "category"}


def words(identifier: str):
    return {w.lower() for part in identifier.split("_")
            for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", part)}


def core_files():
    for root, _, files in os.walk(PACKAGE):
        if not root.startswith((MODALITIES, CONVERTERS)):
            yield from (os.path.join(root, f) for f in files if f.endswith(".py"))


def names_of_modalities(path):
    """(line, token) of every token of ``path`` that names a modality."""
    names = {m.name for m in registered_modalities()}
    with open(path, encoding="utf-8") as f:
        tokens = list(tokenize.generate_tokens(io.StringIO(f.read()).readline))
    found = []
    for i, token in enumerate(tokens):
        docstring = token.type == tokenize.STRING and (
            i == 0 or tokens[i - 1].type in (tokenize.INDENT, tokenize.NEWLINE, tokenize.NL,
                                             tokenize.DEDENT))
        if token.type == tokenize.STRING and not docstring:
            if re.fullmatch(r"[rbuf]*(['\"]{1,3})(.*)\1", token.string, re.S).group(2) in names:
                found.append((token.start[0], token.string))
        elif token.type == tokenize.NAME and words(token.string) & MODALITY_WORDS:
            found.append((token.start[0], token.string))
    return found


def test_the_core_names_no_modality():
    found = {os.path.relpath(path, PACKAGE): names
             for path in core_files() if (names := names_of_modalities(path))}
    assert found == {}


def test_the_check_sees_names_where_they_are():
    # the built-in modules do name their modalities: the check is not blind
    box = os.path.join(MODALITIES, "box", "modality.py")
    assert any(token == "parse_box" for _, token in names_of_modalities(box))
    image = os.path.join(MODALITIES, "image", "modality.py")
    assert any(token == '"IMAGE"' for _, token in names_of_modalities(image))
