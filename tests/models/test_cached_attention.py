"""CachedAttention's decoding step against fairseq's MultiheadAttention with the same
weights: the same outputs step after step, with padded encoder positions and with the
cache reordered between steps as beam search does; training goes through fairseq's path."""
import pytest
import torch
from fairseq.modules import MultiheadAttention

from ofasys_fairseq.models.cached_attention import CachedAttention

DIM, HEADS, BATCH, SOURCE = 32, 4, 6, 7


def pair(**kind):
    torch.manual_seed(0)
    ours = CachedAttention(DIM, HEADS, **kind).eval()
    theirs = MultiheadAttention(DIM, HEADS, **kind).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kind", ["self", "encoder"])
def test_steps_equal_fairseqs_with_padding_and_reordering(kind):
    ours, theirs = pair(**({"self_attention": True} if kind == "self" else
                           {"encoder_decoder_attention": True}))
    torch.manual_seed(1)
    encoder = torch.randn(SOURCE, BATCH, DIM)
    padding = torch.zeros(BATCH, SOURCE, dtype=torch.bool)
    padding[1, 5:] = padding[4, 2:] = True  # shorter sources
    states = ({}, {})
    for step in range(6):
        x = torch.randn(1, BATCH, DIM)
        outputs = []
        for attention, state in zip((ours, theirs), states):
            with torch.no_grad():
                if kind == "self":
                    out, _ = attention(x, x, x, incremental_state=state, need_weights=False)
                else:
                    out, _ = attention(x, encoder, encoder, key_padding_mask=padding,
                                       incremental_state=state, static_kv=True,
                                       need_weights=False)
            outputs.append(out)
        assert outputs[0].shape == (1, BATCH, DIM)
        assert torch.equal(outputs[0], outputs[1]), step  # the same arithmetic
        if step == 2:  # beams swap: every cache follows its new order
            order = torch.tensor([3, 3, 0, 5, 1, 2])
            for attention, state in zip((ours, theirs), states):
                attention.reorder_incremental_state(state, order)
            padding = padding[order]
    key = ours._get_input_buffer(states[0])["prev_key"]
    assert key.shape == (BATCH, HEADS, 6 if kind == "self" else SOURCE, DIM // HEADS)


def test_training_and_attention_weights_take_fairseqs_path():
    ours, theirs = pair(self_attention=True)
    x = torch.randn(5, BATCH, DIM)
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)
    for module in (ours, theirs):
        module.train()
    torch.manual_seed(2)
    out, _ = ours(x, x, x, attn_mask=mask)
    torch.manual_seed(2)
    expected, _ = theirs(x, x, x, attn_mask=mask)
    assert torch.equal(out, expected)
    ours.eval()
    state = {}
    _, weights = ours(x[:1], x[:1], x[:1], incremental_state=state, need_weights=True)
    assert weights is not None and weights.shape == (BATCH, 1, 1)
