"""The AUDIO adapter: 4x subsampling, the lengths the batching counts, padding masks, and
a row's output independent of the rows it is batched with."""
import pytest
import torch

from ofasys_fairseq.modalities.audio.adapter import AudioAdapter, subsampled_length
from ofasys_fairseq.modalities.audio.modality import AudioModality

DIM = 32


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    return AudioAdapter(80, DIM).eval()


@pytest.mark.parametrize("frames, positions", [(1, 1), (4, 1), (5, 2), (8, 2), (9, 3),
                                               (100, 25), (101, 26)])
def test_four_frames_per_position(adapter, frames, positions):
    assert subsampled_length(frames) == positions
    out = adapter(torch.randn(1, frames, 80), torch.tensor([frames]))
    assert out.embeddings.shape == (1, positions, DIM)
    assert not out.padding_mask.any()


def test_padding_mask_and_batching_do_not_change_a_row(adapter):
    lengths = [37, 120, 5]
    rows = [torch.randn(n, 80) for n in lengths]
    batch = AudioModality().collate(rows)
    assert batch["features"].shape == (3, 120, 80)
    out = adapter(**batch)
    assert out.padding_mask.sum(1).tolist() == [30 - subsampled_length(n) for n in lengths]
    for row, features in enumerate(rows):
        alone = adapter(features[None], torch.tensor([features.size(0)]))
        n = subsampled_length(features.size(0))
        torch.testing.assert_close(out.embeddings[row, :n], alone.embeddings[0], atol=1e-5,
                                   rtol=1e-5)
