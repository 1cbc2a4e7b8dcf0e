"""OFASysModel built the way fairseq-train builds it: architectures, weight tying,
forward shapes and incremental decoding."""
import argparse
import json

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

import ofasys_fairseq  # noqa: F401  (registers task, model and architectures)
from ofasys_fairseq.models import OFASysModel
from ofasys_fairseq.models.universal_encoder import TOKENS_ADAPTER

# The published OFASys sizes: width, encoder layers, decoder layers.
SIZES = {
    "ofasys_tiny": (256, 4, 4),
    "ofasys_medium": (512, 4, 4),
    "ofasys_base": (768, 6, 6),
    "ofasys_large": (1024, 12, 12),
    "ofasys_huge": (1280, 24, 12),
}
INSTRUCTION = "[TEXT:src] -> [TEXT:tgt]"
SMALL = ["--embed-dim", "32", "--ffn-embed-dim", "64", "--attention-heads", "4",
         "--encoder-layers", "1", "--decoder-layers", "2", "--dropout", "0.0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_data")
    words = "the cat dog sat on a mat and ran to park".split()
    rows = [{"src": " ".join(words[(i + j) % len(words)] for j in range(5)),
             "tgt": " ".join(words[(3 * i + j) % len(words)] for j in range(3))} for i in range(30)]
    for split in ("train", "valid"):
        with open(root / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return root


def parse(data_dir, arch, *extra):
    """fairseq-train's own argument parsing (architecture defaults included)."""
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "instruction", "--instruction", INSTRUCTION, "--arch", arch,
        "--vocab-size", "40", "--num-bins", "4", "--cpu", "--criterion", "instruction_ce",
        "--save-dir", str(data_dir / "checkpoints"), *extra])


def build(data_dir, arch="ofasys_tiny", *extra):
    cfg = convert_namespace_to_omegaconf(parse(data_dir, arch, *extra))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(0)
    return task, task.build_model(cfg.model).eval()


@pytest.fixture(scope="module")
def small(data_dir):
    return build(data_dir, "ofasys_tiny", *SMALL)


def batch_of(task, n=3):
    dataset = task.datasets["valid"]
    return dataset.collater([dataset[i] for i in range(n)])


# --- architectures -----------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(SIZES))
def test_architecture_defaults(arch):
    assert ARCH_MODEL_REGISTRY[arch] is OFASysModel
    args = argparse.Namespace()
    ARCH_CONFIG_REGISTRY[arch](args)
    width, encoder_layers, decoder_layers = SIZES[arch]
    assert (args.embed_dim, args.encoder_layers, args.decoder_layers) == SIZES[arch]
    assert args.ffn_embed_dim == 4 * width
    assert width % args.attention_heads == 0


@pytest.mark.parametrize("arch", sorted(SIZES))
def test_architecture_through_the_command_line_parser(data_dir, arch):
    cfg = convert_namespace_to_omegaconf(parse(data_dir, arch)).model
    assert (cfg.embed_dim, cfg.encoder_layers, cfg.decoder_layers) == SIZES[arch]
    assert cfg.ffn_embed_dim == 4 * SIZES[arch][0]


def test_explicit_options_override_the_architecture(data_dir):
    args = parse(data_dir, "ofasys_huge", "--encoder-layers", "2", "--embed-dim", "64")
    assert (args.embed_dim, args.encoder_layers, args.decoder_layers) == (64, 2, 12)
    assert args.ffn_embed_dim == 4 * 1280  # not passed: still the architecture's


def test_tiny_architecture_instantiates_with_its_sizes(data_dir):
    task, model = build(data_dir, "ofasys_tiny")
    width, encoder_layers, decoder_layers = SIZES["ofasys_tiny"]
    assert len(model.encoder.layers) == encoder_layers
    assert len(model.decoder.layers) == decoder_layers
    assert model.decoder.embed_tokens.weight.shape == (len(task.target_dictionary), width)
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        assert layer.fc1.out_features == 4 * width
        assert layer.self_attn.embed_dim == width
    assert model.encoder.layers[0].self_attn.num_heads == 4


# --- the model ------------------------------------------------------------------------


def test_decoder_output_projection_is_the_text_embedding(data_dir):
    _, model = build(data_dir, "ofasys_tiny", *SMALL)  # its own: the test edits weights
    text_embedding = model.encoder.adapters[TOKENS_ADAPTER].embed_tokens
    assert model.decoder.embed_tokens is text_embedding
    assert model.decoder.output_projection.weight is text_embedding.weight
    # tied, not copied: training the embedding moves the output layer
    with torch.no_grad():
        text_embedding.weight[5] += 1.0
    assert torch.equal(model.decoder.output_projection.weight[5], text_embedding.weight[5])


def test_forward_shapes(small):
    task, model = small
    sample = batch_of(task)
    logits, extra = model(**sample["net_input"])
    prev = sample["net_input"]["prev_output_tokens"]
    assert logits.shape == (prev.size(0), prev.size(1), len(task.target_dictionary))
    lprobs = model.get_normalized_probs((logits, extra), log_probs=True)
    assert torch.allclose(lprobs.exp().sum(-1), torch.ones(prev.shape), atol=1e-5)


def test_incremental_decoding_equals_full_sequence_decoding(small):
    task, model = small
    sample = batch_of(task, 2)
    net_input = sample["net_input"]
    g = torch.Generator().manual_seed(2)
    d = task.target_dictionary
    prev = torch.randint(d.nspecial, len(d), (2, 6), generator=g)
    prev[:, 0] = d.eos()
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        full, _ = model.decoder(prev, encoder_out=encoder_out)
        state = {}
        for t in range(prev.size(1)):
            step, _ = model.decoder(prev[:, :t + 1], encoder_out=encoder_out,
                                    incremental_state=state)
            assert step.shape == (2, 1, len(d))
            assert torch.allclose(step[:, 0], full[:, t], atol=1e-4), t


def test_incremental_state_reorders_like_the_batch(small):
    """What beam search does between steps: reorder encoder output and decoder state."""
    task, model = small
    sample = batch_of(task, 3)
    net_input = sample["net_input"]
    d = task.target_dictionary
    g = torch.Generator().manual_seed(3)
    prev = torch.randint(d.nspecial, len(d), (3, 5), generator=g)
    prev[:, 0] = d.eos()
    order = torch.tensor([1, 1, 2, 0])
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        state = {}
        for t in range(2):
            model.decoder(prev[:, :t + 1], encoder_out=encoder_out, incremental_state=state)
        model.decoder.reorder_incremental_state_scripting(state, order)
        encoder_out = model.encoder.reorder_encoder_out(encoder_out, order)
        prev = prev[order]
        full, _ = model(net_input["src_tokens"][order], net_input["src_lengths"][order], prev)
        for t in range(2, prev.size(1)):
            step, _ = model.decoder(prev[:, :t + 1], encoder_out=encoder_out,
                                    incremental_state=state)
            assert torch.allclose(step[:, 0], full[:, t], atol=1e-4), t


# --- fine-tuning: type rows by name ------------------------------------------------------------

def encoder_reading(*modalities):
    from fairseq.data import Dictionary
    from fairseq.models.transformer import TransformerConfig

    from ofasys_fairseq.models.universal_encoder import UniversalEncoder
    cfg = TransformerConfig()
    cfg.encoder.embed_dim, cfg.encoder.layers = 8, 1
    keys = {m.lower(): m for m in modalities}
    adapters = torch.nn.ModuleDict({TOKENS_ADAPTER: torch.nn.Identity(),
                                    **{k: torch.nn.Identity() for k in keys}})
    return UniversalEncoder(cfg, Dictionary(), adapters, keys)


def test_a_checkpoint_keeps_its_type_rows_names_and_fine_tuning_maps_rows_by_them():
    torch.manual_seed(0)
    checkpoint = encoder_reading("IMAGE", "AUDIO").state_dict()
    assert checkpoint["_extra_state"] == {"type_names": [TOKENS_ADAPTER, "AUDIO", "IMAGE"]}
    saved = checkpoint["type_embedding.weight"].clone()
    tuned = encoder_reading("IMAGE", "VIDEO")  # rows: tokens, IMAGE, VIDEO
    fresh = tuned.type_rows_by_name(checkpoint, "")
    assert fresh == ["VIDEO"]
    rows = checkpoint["type_embedding.weight"]
    assert torch.equal(rows[0], saved[0]) and torch.equal(rows[1], saved[2])  # tokens, IMAGE
    assert torch.equal(rows[2], tuned.type_embedding.weight[2])  # VIDEO: this model's own
    tuned.load_state_dict({k: v for k, v in checkpoint.items() if k in tuned.state_dict()})


def test_a_checkpoint_of_other_type_rows_is_refused_when_not_fine_tuning():
    with pytest.raises(ValueError, match=r"the checkpoint's encoder embeds \['tokens', 'AUDIO'\], "
                                         r"this model \['tokens', 'IMAGE'\]"):
        encoder_reading("IMAGE").load_state_dict(encoder_reading("AUDIO").state_dict())
