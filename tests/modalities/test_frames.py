"""The continuous-output head: a post-net that refines each whole sequence the same way
alone or batched, and the weighted frame loss."""
import pytest
import torch
import torch.nn.functional as F

from ofasys_fairseq.modalities.frames import (FrameHead, FrameLossWeights, FramePrediction,
                                              frame_loss)


def test_the_post_net_refines_a_sequence_alike_alone_and_batched():
    torch.manual_seed(0)
    head = FrameHead(frame_dim=6, embed_dim=16, postnet=True).eval()
    short, long = torch.randn(3, 6), torch.randn(9, 6)
    alone = head.refine([short])[0]
    batched = head.refine([short, long])
    assert not torch.allclose(alone, short)  # the post-net changes it
    assert torch.allclose(batched[0], alone, atol=1e-6)  # padding does not leak in
    # the criterion's form: states of all rows flattened, each with its row
    states = torch.randn(12, 16)
    rows = torch.tensor([0] * 3 + [1] * 9)
    predicted = head(states, rows)
    expected = torch.cat(head.refine([predicted.frames[:3], predicted.frames[3:]]))
    assert torch.allclose(predicted.refined, expected, atol=1e-6)


def test_without_a_post_net_nothing_is_refined():
    head = FrameHead(frame_dim=4, embed_dim=8)
    frames = [torch.randn(2, 4)]
    assert head.refine(frames)[0] is frames[0]
    assert head(torch.randn(2, 8), torch.tensor([0, 0])).refined is None


def test_the_frame_loss_weighs_l1_mse_and_stop_over_both_predictions():
    target, stop = torch.tensor([[1.0, 2.0]]), torch.tensor([1.0])
    predicted = FramePrediction(torch.tensor([[0.0, 4.0]]), torch.tensor([0.3]),
                                torch.tensor([[1.0, 1.0]]))
    bce = F.binary_cross_entropy_with_logits(torch.tensor([0.3]), stop)
    # errors: (-1, 2) before the post-net, (0, -1) after it
    l1, mse = (1.5 + 0.5), (2.5 + 0.5)
    assert frame_loss(predicted, target, stop, FrameLossWeights(1, 0, 0)).item() == pytest.approx(l1)
    assert frame_loss(predicted, target, stop, FrameLossWeights(0, 1, 0)).item() == pytest.approx(mse)
    assert frame_loss(predicted, target, stop, FrameLossWeights(0, 0, 2)).item() == \
        pytest.approx(2 * bce.item())
    assert frame_loss(predicted, target, stop).item() == pytest.approx(l1 + mse + bce.item())
