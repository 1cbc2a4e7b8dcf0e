"""BOX: a region of an image as four ``<bin_k>`` location tokens, as OFA does.

A cell holds ``x0,y0,x1,y1`` (or a JSON list of the four) in pixels of the original
image of the template's first IMAGE slot, its *anchor*. The image's preprocessing moves
the box with the pixels (resize, crop, flip) and hands it back as fractions of the
output width and height; each coordinate then becomes one of ``num_bins`` bins,
``k = round(f * (num_bins - 1))``. As a target, beam search allows exactly four location
tokens with x1 > x0 and y1 > y0, and the output is mapped back to pixels of the
original image.
"""
import json
import math
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from fairseq.dataclass import FairseqDataclass

from ...instruction import Slot
from ...scoring.validation_metrics import register_metric
from ..base import Context, Corpus, Modality, TokenConstraint
from ..image import IMAGE, IMAGE_RECIPES, recipe_of
from ..text import NO_LOSS
from .accuracy import box_accuracy

BOX_LENGTH = 4  # location tokens per box
register_metric("box_acc", "_box_hits", "_box_total")  # Acc@IoU>=0.5, in percent
BIN_PATTERN = re.compile(r"<bin_(\d+)>")
LOCATIONS_PATTERN = re.compile(r"(\s*<bin_\d+>)+\s*")


@dataclass
class BoxOptions(FairseqDataclass):
    num_bins: int = field(default=1000, metadata={"help": "number of <bin_k> location tokens"})


def bin_symbol(k: int) -> str:
    return f"<bin_{k}>"


def parse_box(value: object) -> List[float]:
    """Four finite numbers with x0 < x1 and y0 < y1; ValueError saying what is wrong."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else text.split(",")
        except json.JSONDecodeError:
            raise ValueError(f"expected 'x0,y0,x1,y1' or a JSON list, got {text!r}") from None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"expected 'x0,y0,x1,y1' or a list of four numbers, "
                         f"found {type(value).__name__}")
    if len(value) != BOX_LENGTH:
        raise ValueError(f"expected 4 coordinates x0,y0,x1,y1, got {len(value)}: {value!r}")
    box = []
    for name, coordinate in zip(("x0", "y0", "x1", "y1"), value):
        try:
            number = float(coordinate.strip() if isinstance(coordinate, str) else coordinate)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(coordinate, bool) or not math.isfinite(number):
            raise ValueError(f"{name} is not a finite number: {coordinate!r}")
        box.append(number)
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"expected x0 < x1 and y0 < y1, got {format_box(box)}")
    return box


def check_box_inside(box: Sequence[float], size: Tuple[int, int]) -> None:
    """ValueError unless the box lies within an image of ``(width, height)``."""
    width, height = size
    if min(box) < 0 or box[2] > width or box[3] > height:
        raise ValueError(f"box {format_box(box)} is outside the {width}x{height} image")


def quantize(box: Sequence[float], side: float, num_bins: int) -> List[int]:
    """Bins of a box in pixels of a ``side x side`` image (``side=1``: fractions)."""
    return [min(max(int(round(c / side * (num_bins - 1))), 0), num_bins - 1) for c in box]


def dequantize(bins: Sequence[int], num_bins: int) -> List[float]:
    """Bins -> coordinates as fractions of the image width / height."""
    return [k / (num_bins - 1) for k in bins]


def format_box(box: Sequence[float]) -> str:
    return ",".join(f"{c:g}" for c in box)


class BoxConstraint(TokenConstraint):
    """Exactly four location tokens, with x1 > x0 and y1 > y0 (unless x0 / y0 is already
    the last bin), then end of sentence."""

    def __init__(self, first_bin: int, num_bins: int, eos: int):
        self.first_bin, self.last_bin, self.eos = first_bin, first_bin + num_bins - 1, eos

    def allowed_mask(self, generated, lengths, vocab_size):
        # the coordinate two back is the lower bound's (x0 for x1, y0 for y1)
        two_back = generated.gather(1, (lengths - 2).clamp(min=0).unsqueeze(1)).squeeze(1)
        low = torch.where(lengths < 2, self.first_bin, (two_back + 1).clamp(max=self.last_bin))
        ids = torch.arange(vocab_size, device=generated.device)
        mask = (ids >= low.unsqueeze(1)) & (ids <= self.last_bin) & (lengths < BOX_LENGTH).unsqueeze(1)
        mask[:, self.eos] = lengths == BOX_LENGTH
        return mask


class BoxModality(Modality):
    name = "BOX"
    attributes = {"no_loss": NO_LOSS}
    choices = {"preprocess": ("box",), "adaptor": ("text",)}  # location tokens in the text
    checkpoint_options = ("num_bins",)  # <bin_k> means k / (num_bins - 1) of the image

    def check_slot(self, slot: Slot, template) -> Optional[Tuple[int, str]]:
        image = self.anchor(slot, template)
        if image is None:
            return slot.position, f"{slot} needs an IMAGE slot: box coordinates are pixels of " \
                                  f"that image"
        recipe = recipe_of(image)
        if not IMAGE_RECIPES[recipe][1]:
            movers = " or ".join(r for r, (_, moves) in IMAGE_RECIPES.items() if moves)
            return (image.attr_positions.get("preprocess", image.position),
                    f"preprocess={recipe} cannot move boxes with the image (RandAugment); use "
                    f"{movers}")
        return None

    def anchor(self, slot: Slot, template) -> Optional[Slot]:
        """The template's first IMAGE slot: box coordinates are its pixels."""
        return next((s for s in template.slots if s.modality == IMAGE), None)

    def settings(self, cfg) -> dict:
        return {"num_bins": cfg.num_bins}

    def settings_from_old_checkpoint(self, task_state) -> dict:
        return {"num_bins": task_state["vocabulary"]["num_bins"]}

    def reserved_symbols(self, cfg) -> List[str]:
        return [bin_symbol(k) for k in range(cfg.num_bins)]

    # -- cells -------------------------------------------------------------------------
    def read(self, cell, slot: Slot, ctx: Context, decode: bool = True) -> List[float]:
        return parse_box(cell)

    def check_on_anchor(self, box, image, slot: Slot, ctx: Context) -> None:
        size = getattr(image, "original_size", None)  # None: not decoded (a quick scan)
        if size is not None:
            check_box_inside(box, size)

    # -- tokens --------------------------------------------------------------------------
    def num_tokens(self, value, slot: Slot, ctx: Context) -> int:
        return BOX_LENGTH

    def tokens(self, fractions, slot: Slot, ctx: Context, rng=None) -> List[int]:
        """``fractions``: the box as its image's preprocessing left it (fractions of the
        output width and height)."""
        first = _first_bin(ctx)
        return [first + k for k in quantize(fractions, 1, ctx.settings["num_bins"])]

    # -- output --------------------------------------------------------------------------
    def reference(self, box, slot: Slot, ctx: Context) -> List[float]:
        return box  # pixels of the original image

    def output_context(self, slot: Slot, template, values) -> Tuple[int, int]:
        """The original (width, height) of the image the box is drawn on."""
        return values[self.anchor(slot, template)].original_size

    def constraint(self, slot: Slot, ctx: Context) -> TokenConstraint:
        return BoxConstraint(_first_bin(ctx), ctx.settings["num_bins"],
                             ctx.vocab.dictionary.eos())

    def postprocess(self, tokens: Sequence[int], slot: Slot, ctx: Context,
                    image_size: Sequence[int]) -> Optional[List[float]]:
        """``[x0, y0, x1, y1]`` in pixels of an image of ``image_size`` (width, height);
        None unless the tokens are exactly four location tokens."""
        num_bins = ctx.settings["num_bins"]
        bins = [int(t) - _first_bin(ctx) for t in tokens]
        if len(bins) != BOX_LENGTH or not all(0 <= k < num_bins for k in bins):
            return None
        width, height = image_size
        return [c * scale for c, scale in zip(dequantize(bins, num_bins),
                                              (width, height, width, height))]

    def metrics(self, slot: Slot, template) -> List[str]:
        return ["box_acc"]

    def metric_stats(self, predictions, references, slot: Slot, metrics, corpus: Corpus):
        """Acc@IoU>=0.5 of decoded boxes against the pixel boxes of the data."""
        predicted = torch.tensor([p or [0.0] * BOX_LENGTH for p in predictions])  # none: a miss
        hits, total = box_accuracy(predicted, torch.tensor(references).float())
        return {"_box_hits": hits, "_box_total": total}

    def format_generated(self, text: str, settings) -> Optional[str]:
        """A run of location tokens (with or without spaces: --post-process) prints as
        ``x0,y0,x1,y1`` in fractions of the image size (generate knows no image sizes)."""
        if not LOCATIONS_PATTERN.fullmatch(text):
            return None
        bins = [int(k) for k in BIN_PATTERN.findall(text)]
        return ",".join(f"{c:.3f}" for c in dequantize(bins, settings["num_bins"]))


def _first_bin(ctx: Context) -> int:
    return ctx.vocab.dictionary.index(bin_symbol(0))
