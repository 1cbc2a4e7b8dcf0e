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


def decode_beams(orders, beam=3, sources=2, steps=5):
    """Encoder attention steps of ours (told the beam), the beams of each source row
    consecutive as fairseq's search makes them, reordered after step ``i`` by
    ``orders[i]``, against fairseq's attention over the reordered encoder states (no
    cache); returns the rows of keys ours kept at each step."""
    ours, theirs = pair(encoder_decoder_attention=True)
    ours.set_beam_size(beam)
    assert theirs.beam_size == 1 and ours.beam_size == 1  # fairseq's own folding stays off
    torch.manual_seed(1)
    encoder = torch.randn(SOURCE, sources, DIM).repeat_interleave(beam, dim=1)
    padding = torch.zeros(sources, SOURCE, dtype=torch.bool)
    padding[1, 4:] = True
    padding = padding.repeat_interleave(beam, dim=0)
    state, kept = {}, []
    for step in range(steps):
        x = torch.randn(1, padding.size(0), DIM)
        with torch.no_grad():
            out = ours(x, encoder, encoder, key_padding_mask=padding, incremental_state=state,
                       static_kv=True, need_weights=False)[0]
            expected = theirs(x, encoder, encoder, key_padding_mask=padding,
                              need_weights=False)[0]
        assert torch.allclose(out, expected, atol=1e-6), step
        kept.append(len(ours._get_input_buffer(state)["prev_key"]))
        if step in orders:
            order = torch.tensor(orders[step])
            ours.reorder_incremental_state(state, order)
            encoder, padding = encoder[:, order], padding[order]
    return kept


def test_beams_of_a_source_share_its_keys_and_decode_as_fairseqs():
    """One set of keys per source row while beams move within their row and rows finish;
    an order mixing rows gives each hypothesis its own keys again."""
    assert decode_beams({1: [2, 0, 1, 5, 5, 3],  # beams move within their source row
                         2: [3, 4, 5]}) == [2, 2, 2, 1, 1]  # the first row finished
    assert decode_beams({1: [0, 3, 1, 4, 2, 5]}) == [2, 2, 6, 6, 6]


def test_a_beam_size_whose_rows_do_not_repeat_keeps_keys_per_row():
    ours, theirs = pair(encoder_decoder_attention=True)
    ours.set_beam_size(3)  # stale: these six rows are six sources
    encoder = torch.randn(SOURCE, BATCH, DIM)
    x = torch.randn(1, BATCH, DIM)
    states = ({}, {})
    with torch.no_grad():
        out, expected = (a(x, encoder, encoder, incremental_state=s, static_kv=True,
                           need_weights=False)[0] for a, s in zip((ours, theirs), states))
    assert torch.equal(out, expected)
    assert len(ours._get_input_buffer(states[0])["prev_key"]) == BATCH
