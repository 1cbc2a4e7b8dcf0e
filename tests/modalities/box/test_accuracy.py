import pytest
import torch
from fairseq.scoring import build_scorer

from ofasys_fairseq.modalities.box.accuracy import (
    ACC_IOU_THRESHOLD,
    BoxAccuracyConfig,
    BoxAccuracyScorer,
    box_accuracy,
    box_iou,
    parse_box_text,
)


def test_box_iou_of_known_boxes():
    predicted = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    gold = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 3.0, 3.0], [1.0, 0.0, 3.0, 2.0]])
    # The third pair overlaps in a 1x2 strip of two 2x2 boxes.
    intersection, area = 1.0 * 2.0, 2.0 * 2.0
    half_overlap = intersection / (area + area - intersection)
    assert box_iou(predicted, gold).tolist() == pytest.approx([1.0, 0.0, half_overlap])


def test_box_iou_is_invariant_to_scaling_each_axis():
    predicted = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    gold = torch.tensor([[30.0, 10.0, 70.0, 60.0]])
    scale = torch.tensor([1 / 640, 1 / 480, 1 / 640, 1 / 480])
    scaled_iou = box_iou(predicted * scale, gold * scale).item()
    assert scaled_iou == pytest.approx(box_iou(predicted, gold).item())


def test_box_iou_of_degenerate_boxes_is_zero():
    predicted = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 1.0, 1.0]])
    gold = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    assert box_iou(predicted, gold).tolist() == [0.0, 0.0]


def test_box_iou_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        box_iou(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        box_iou(torch.zeros(4), torch.zeros(4))


def test_box_accuracy_threshold_boundary():
    gold = torch.tensor([[0.0, 0.0, 2.0, 1.0]] * 3, dtype=torch.float64)
    # IoUs 0.5 (exactly on the threshold), 0.499 and 1.
    predicted = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.998, 1.0], [0.0, 0.0, 2.0, 1.0]], dtype=torch.float64
    )
    assert box_iou(predicted, gold)[0].item() == ACC_IOU_THRESHOLD
    assert box_accuracy(predicted, gold) == (2, 3)
    assert box_accuracy(predicted, gold, threshold=0.75) == (1, 3)


def test_parse_box_text():
    assert parse_box_text("0.125,0.031,0.406,0.500") == [0.125, 0.031, 0.406, 0.5]
    assert parse_box_text(" 1 , 2,3 ,4 ") == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    "text", ["", "0.1,0.2,0.3", "0.1,0.2,0.3,0.4,0.5", "a,b,c,d", "0.1 0.2 0.3 0.4", "1,2,3,nan"]
)
def test_parse_box_text_rejects_non_boxes(text):
    with pytest.raises(ValueError, match="four comma-separated numbers") as error:
        parse_box_text(text)
    assert repr(text) in str(error.value)


def test_fairseq_scorer():
    scorer = build_scorer("box_acc", tgt_dict=None)
    assert isinstance(scorer, BoxAccuracyScorer)
    scorer.add_string("0.0,0.0,0.5,0.5", "0.000,0.000,0.500,0.500")  # IoU 1
    scorer.add_string("0.0,0.0,0.5,0.5", "0.25,0.0,0.75,0.5")  # IoU 1/3
    scorer.add_string("0.0,0.0,0.5,0.5", "a dog")  # not a box: a miss
    scorer.add_string("0.0,0.0,0.5,0.5", "0.0,0.0,0.5,0.25")  # IoU 1/2
    assert scorer.score() == pytest.approx(50.0)
    mean_iou = (1 + 1 / 3 + 0 + 1 / 2) / 4
    assert scorer.result_string() == f"Acc@IoU>=0.5 = 50.00 (2/4), mean IoU = {mean_iou:.3f}"


def test_fairseq_scorer_threshold_and_empty():
    scorer = BoxAccuracyScorer(BoxAccuracyConfig(iou_threshold=0.3))
    assert scorer.result_string() == "Acc@IoU>=0.3 = 0.00 (0/0), mean IoU = 0.000"
    scorer.add_string("0,0,1,1", "0.5,0,1.5,1")  # IoU 1/3
    assert scorer.score() == 100.0


def test_fairseq_scorer_rejects_bad_target():
    scorer = build_scorer("box_acc", tgt_dict=None)
    scorer.add_string("not a box", "0,0,1,1")
    with pytest.raises(ValueError, match="not a box"):
        scorer.score()
