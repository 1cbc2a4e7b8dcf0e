"""TokenAdapter and UniversalEncoder: shapes, values and batch reordering."""
import pytest
import torch
import torch.nn as nn
from fairseq.data import Dictionary

from ofasys_fairseq.modalities.image.adapter import ImageGeometry, build_image_adapter
from ofasys_fairseq.models.adapters import AdapterOutput, TokenAdapter
from ofasys_fairseq.models.ofasys_model import OFASysConfig, transformer_config
from ofasys_fairseq.models.universal_encoder import TOKENS_ADAPTER, UniversalEncoder

DIM = 32
MAX_POSITIONS = 24


def tiny_dictionary(size: int = 20) -> Dictionary:
    d = Dictionary()
    for i in range(size):
        d.add_symbol(f"w{i}")
    return d


def right_padded(rows, pad):
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows])


@pytest.fixture
def dictionary():
    return tiny_dictionary()


def build_encoder(dictionary, feature_adapters=None, modality_of=None) -> UniversalEncoder:
    """A 2-layer encoder of width DIM over the token adapter and ``feature_adapters``."""
    torch.manual_seed(0)
    cfg = transformer_config(OFASysConfig(embed_dim=DIM, ffn_embed_dim=64, attention_heads=4,
                                          encoder_layers=2, decoder_layers=1, dropout=0.0,
                                          max_source_positions=MAX_POSITIONS,
                                          max_target_positions=MAX_POSITIONS))
    embed = nn.Embedding(len(dictionary), DIM, dictionary.pad())
    adapters = nn.ModuleDict({TOKENS_ADAPTER: TokenAdapter(embed, MAX_POSITIONS),
                              **(feature_adapters or {})})
    return UniversalEncoder(cfg, dictionary, adapters, modality_of or {}).eval()


@pytest.fixture
def encoder(dictionary):
    return build_encoder(dictionary)


@pytest.fixture
def batch(dictionary):
    # three rows of different lengths (right padded, as fairseq's collater does)
    g = torch.Generator().manual_seed(1)
    lengths = [7, 4, 6]
    rows = [torch.randint(dictionary.nspecial, len(dictionary), (n,), generator=g).tolist()
            for n in lengths]
    rows = [r[:-1] + [dictionary.eos()] for r in rows]
    return right_padded(rows, dictionary.pad()), torch.tensor(lengths)


# --- TokenAdapter ---------------------------------------------------------------


def test_token_adapter_shapes_and_padding_mask(dictionary, batch):
    tokens, _ = batch
    embed = nn.Embedding(len(dictionary), DIM, dictionary.pad())
    adapter = TokenAdapter(embed, MAX_POSITIONS)
    out = adapter(tokens)
    assert isinstance(out, AdapterOutput)
    assert out.embeddings.shape == (tokens.size(0), tokens.size(1), DIM)
    assert out.padding_mask.shape == tokens.shape
    assert out.padding_mask.dtype == torch.bool
    assert torch.equal(out.padding_mask, tokens == dictionary.pad())
    assert adapter.embed_tokens is embed  # the shared vocabulary embedding, not a copy


def test_token_adapter_adds_learned_positions_counted_from_first_token(dictionary, batch):
    tokens, lengths = batch
    embed = nn.Embedding(len(dictionary), DIM, dictionary.pad())
    adapter = TokenAdapter(embed, MAX_POSITIONS)
    out = adapter(tokens).embeddings
    pad = dictionary.pad()
    positions = adapter.embed_positions.weight
    for row, n in enumerate(lengths.tolist()):
        for i in range(tokens.size(1)):
            if i < n:  # fairseq's learned positions start right after padding_idx
                expected = embed.weight[tokens[row, i]] + positions[pad + 1 + i]
            else:  # padding: both tables hold zeros at padding_idx
                expected = torch.zeros(DIM)
            assert torch.allclose(out[row, i], expected, atol=1e-6), (row, i)


def test_token_adapter_row_does_not_depend_on_batch_padding(dictionary, batch):
    tokens, lengths = batch
    adapter = TokenAdapter(nn.Embedding(len(dictionary), DIM, dictionary.pad()), MAX_POSITIONS)
    padded = adapter(tokens)
    for row, n in enumerate(lengths.tolist()):
        alone = adapter(tokens[row:row + 1, :n])
        assert torch.allclose(padded.embeddings[row, :n], alone.embeddings[0], atol=1e-6)
        assert not alone.padding_mask.any()


# --- UniversalEncoder ------------------------------------------------------------


def test_encoder_output_layout(encoder, batch, dictionary):
    tokens, lengths = batch
    out = encoder(tokens, src_lengths=lengths)
    (x,) = out["encoder_out"]
    (mask,) = out["encoder_padding_mask"]
    assert x.shape == (tokens.size(1), tokens.size(0), DIM)  # T x B x C
    assert mask.shape == (tokens.size(0), tokens.size(1))  # B x T
    assert torch.equal(mask, tokens.eq(dictionary.pad()))
    for key in ("encoder_embedding", "encoder_states", "src_tokens", "src_lengths"):
        assert out[key] == []
    assert encoder.max_positions() == MAX_POSITIONS


def test_encoder_adds_the_modality_type_embedding_to_adapter_output(encoder, batch):
    tokens, lengths = batch
    seen = {}
    hook = encoder.layernorm_embedding.register_forward_hook(
        lambda module, inputs, output: seen.setdefault("x", inputs[0].detach().clone()))
    try:
        encoder(tokens, src_lengths=lengths)
    finally:
        hook.remove()
    type_id = encoder.type_index[TOKENS_ADAPTER]
    adapter_out = encoder.adapters[TOKENS_ADAPTER](tokens).embeddings
    expected = adapter_out + encoder.type_embedding.weight[type_id]
    assert seen["x"].shape == expected.shape
    assert torch.allclose(seen["x"], expected, atol=1e-6)
    # one row per kind of input the encoder reads: here the token stream only
    assert encoder.type_embedding.num_embeddings == 1 and encoder.slot_embedding is None

    # and the type embedding really reaches the output
    before = encoder(tokens, src_lengths=lengths)["encoder_out"][0]
    with torch.no_grad():
        encoder.type_embedding.weight[type_id] += 1.0 + torch.arange(DIM, dtype=torch.float) / DIM
    after = encoder(tokens, src_lengths=lengths)["encoder_out"][0]
    assert not torch.allclose(before, after, atol=1e-4)


def test_encoder_masks_padding(encoder, batch):
    tokens, lengths = batch
    x = encoder(tokens, src_lengths=lengths)["encoder_out"][0]
    for row, n in enumerate(lengths.tolist()):
        alone = encoder(tokens[row:row + 1, :n], src_lengths=lengths[row:row + 1])
        assert torch.allclose(x[:n, row], alone["encoder_out"][0][:, 0], atol=1e-5), row


def test_reorder_encoder_out_matches_encoding_the_reordered_batch(encoder, batch):
    tokens, lengths = batch
    out = encoder(tokens, src_lengths=lengths)
    new_order = torch.tensor([2, 0, 2, 1, 0])  # beam search repeats and permutes rows
    reordered = encoder.reorder_encoder_out(out, new_order)
    direct = encoder(tokens[new_order], src_lengths=lengths[new_order])
    assert reordered["encoder_out"][0].shape == (tokens.size(1), 5, DIM)
    assert torch.allclose(reordered["encoder_out"][0], direct["encoder_out"][0], atol=1e-5)
    assert torch.equal(reordered["encoder_padding_mask"][0], direct["encoder_padding_mask"][0])
    # the original is left as it was
    assert out["encoder_out"][0].size(1) == tokens.size(0)


# --- feature slots ----------------------------------------------------------------------------


def test_slot_embeddings_are_all_that_tells_two_images_apart(dictionary):
    """Two images of the same size get the same patch positions and type embedding: with
    zero slot embeddings, swapping them only swaps their encoder outputs, and the text
    reads the same (so no decoder could tell which came first); slot embeddings break it."""
    vit = build_image_adapter("vit", ImageGeometry(16, 8), DIM, resnet_depth=18)
    encoder = build_encoder(dictionary, {"image_vit": vit}, {"image_vit": "IMAGE"})
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    tokens = torch.tensor([[dictionary.bos(), 7, 8, dictionary.eos()]] * 2)
    # row 0 reads (a, b), row 1 reads (b, a)
    features = [{"adapter": "image_vit", "inputs": {"pixels": images[[0, 1, 1, 0]]},
                 "slots": torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])}]

    def encode():
        with torch.no_grad():
            return encoder(tokens, features=features)["encoder_out"][0].transpose(0, 1)

    patches = 4  # 16 px in 8 px patches
    with torch.no_grad():
        encoder.slot_embedding.weight.zero_()
    out = encode()
    assert torch.allclose(out[0, :patches], out[1, patches:2 * patches], atol=1e-5)
    assert torch.allclose(out[0, 2 * patches:], out[1, 2 * patches:], atol=1e-5)  # the text
    with torch.no_grad():
        encoder.slot_embedding.weight.normal_(std=DIM ** -0.5)
    out = encode()
    assert not torch.allclose(out[0, 2 * patches:], out[1, 2 * patches:], atol=1e-3)
