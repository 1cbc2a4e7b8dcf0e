"""Visual grounding accuracy: the share of predicted boxes whose IoU with the gold box
reaches 0.5 (Acc@0.5, as reported for RefCOCO). IoU is invariant to scaling each axis,
so boxes given as fractions of the image width/height score the same as in pixels."""
import math
from dataclasses import dataclass, field
from typing import List, Tuple

import torch
import torchvision
from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import BaseScorer, register_scorer

ACC_IOU_THRESHOLD = 0.5

# torchvision's box_iou compares every box with every box; vmap over single-box pairs
# keeps the memory linear in the number of boxes.
_pairwise_iou = torch.vmap(lambda a, b: torchvision.ops.box_iou(a[None], b[None])[0, 0])


def box_iou(predicted: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """The IoU of each predicted box with its gold box; a box with x1 < x0 or y1 < y0
    overlaps nothing, and two empty boxes have IoU 0.

    Args:
        predicted: ``(N, 4)`` boxes as ``x0, y0, x1, y1``.
        gold: ``(N, 4)`` boxes in the same coordinates.
    Returns:
        ``(N,)`` IoUs.
    """
    if predicted.dim() != 2 or predicted.shape[-1] != 4 or predicted.shape != gold.shape:
        raise ValueError(
            f"expected two (N, 4) box tensors, got {tuple(predicted.shape)} and {tuple(gold.shape)}"
        )
    return torch.nan_to_num(_pairwise_iou(predicted, gold), nan=0.0)


def box_accuracy(
    predicted: torch.Tensor, gold: torch.Tensor, threshold: float = ACC_IOU_THRESHOLD
) -> Tuple[int, int]:
    """How many predicted boxes have IoU >= ``threshold`` with their gold box.

    Args:
        predicted: ``(N, 4)`` boxes as ``x0, y0, x1, y1``.
        gold: ``(N, 4)`` boxes in the same coordinates.
        threshold: the IoU a box needs to count as a hit.
    Returns:
        ``(hits, total)``.
    """
    return int((box_iou(predicted, gold) >= threshold).sum()), len(gold)


def parse_box_text(text: str) -> List[float]:
    """Parses fairseq-generate's printing of a box, e.g. ``"0.125,0.031,0.406,0.500"``.

    Args:
        text: four comma-separated numbers ``x0,y0,x1,y1``.
    """
    fields = text.split(",")
    try:
        box = [float(number) for number in fields]
    except ValueError:
        box = []
    if len(box) != 4 or not all(map(math.isfinite, box)):
        raise ValueError(
            f"expected a box as four comma-separated numbers x0,y0,x1,y1, got {text!r}"
        )
    return box


@dataclass
class BoxAccuracyConfig(FairseqDataclass):
    iou_threshold: float = field(
        default=ACC_IOU_THRESHOLD, metadata={"help": "IoU a predicted box needs to count as a hit"}
    )


@register_scorer("box_acc", dataclass=BoxAccuracyConfig)
class BoxAccuracyScorer(BaseScorer):
    """``fairseq-generate --scoring box_acc``: grounding accuracy in percent. A hypothesis
    that is not a box counts as a miss; a target that is not a box is an error."""

    def ious(self) -> torch.Tensor:
        gold = torch.tensor([parse_box_text(ref) for ref in self.ref], dtype=torch.float64)
        predicted = torch.zeros_like(gold)
        parsed = torch.zeros(len(self.pred), dtype=torch.bool)
        for index, pred in enumerate(self.pred):
            try:
                predicted[index] = torch.tensor(parse_box_text(pred), dtype=torch.float64)
                parsed[index] = True
            except ValueError:
                pass
        return torch.where(parsed, box_iou(predicted.reshape(-1, 4), gold.reshape(-1, 4)), 0.0)

    def hits(self) -> int:
        return int((self.ious() >= self.cfg.iou_threshold).sum())

    def score(self) -> float:
        return 100.0 * self.hits() / max(len(self.ref), 1)

    def result_string(self) -> str:
        mean_iou = self.ious().mean().item() if self.ref else 0.0
        return (
            f"Acc@IoU>={self.cfg.iou_threshold:g} = {self.score():.2f} "
            f"({self.hits()}/{len(self.ref)}), mean IoU = {mean_iou:.3f}"
        )
