"""The decoder's cache in fairseq's beam search, on a real (random, seeded) model: a step
computes its own position only, and beam search reorders the cache with its beams.

References are computed here without the cache: the whole sequence through the decoder."""
import argparse
import random

import pytest
import torch
from fairseq import tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.search import BeamSearch, Sampling
from torch.utils.flop_counter import FlopCounterMode

from ofasys_fairseq.decoding.restricted_generator import RestrictedSequenceGenerator
from tests.decoding.test_restricted_generator import WORDS
from tests.helpers import write_jsonl
from tests.tasks.test_instruction_task import parse_args

EMBED_DIM, LAYERS = 32, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    rng = random.Random(0)
    rows = [{"src": " ".join(rng.choice(WORDS) for _ in range(6)),
             "tgt": " ".join(rng.choice(WORDS) for _ in range(4))} for _ in range(30)]
    for split in ("train", "valid"):
        write_jsonl(root / f"{split}.jsonl", rows)
    cfg = convert_namespace_to_omegaconf(parse_args(
        root, "[TEXT:src] -> [TEXT:tgt]", "--embed-dim", str(EMBED_DIM), "--ffn-embed-dim",
        "64", "--encoder-layers", "1", "--decoder-layers", str(LAYERS), "--dropout", "0.0"))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(3)
    model = task.build_model(cfg.model).eval()
    dataset = task.datasets["valid"]
    sample = dataset.collater([dataset[i] for i in range(6)])
    return task, model, sample


def decoder_flops(model, encoder_out, tokens, incremental_state=None) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.decoder(tokens, encoder_out, incremental_state=incremental_state)
    return counter.get_total_flops()


def test_a_cached_step_computes_only_its_own_position(setup):
    task, model, sample = setup
    net_input = sample["net_input"]
    with torch.no_grad():
        encoder_out = model.encoder(net_input["src_tokens"][:1], net_input["src_lengths"][:1])
    tokens = torch.randint(4, len(task.dictionary), (1, 41))

    def last_step(length):
        """FLOPs and output of step ``length`` after the cache was filled step by step."""
        state = {}
        with torch.no_grad():
            for t in range(1, length):
                model.decoder(tokens[:, :t], encoder_out, incremental_state=state)
            out = model.decoder(tokens[:, :length], encoder_out, incremental_state=state)[0]
        return decoder_flops(model, encoder_out, tokens[:, :length], dict(state)), out[0, -1]

    short_flops, _ = last_step(4)
    long_flops, long_out = last_step(40)
    # only attention over the cached keys and values grows: per layer, scores and weighted
    # values each one multiply-add (2 FLOPs) per width unit and position
    assert long_flops - short_flops <= LAYERS * 2 * 2 * EMBED_DIM * (40 - 4)
    # without the cache, a step would recompute every position before it
    assert 8 * long_flops < decoder_flops(model, encoder_out, tokens[:, :40])
    with torch.no_grad():
        full_out = model.decoder(tokens[:, :40], encoder_out)[0][0, -1]
    assert torch.allclose(long_out, full_out, atol=1e-5)


def test_beam_search_scores_match_the_uncached_model(setup):
    """Every hypothesis's per-token scores, computed with the cache reordered as beams
    swap and drop (the encoder's keys kept once per source row), equal the model's own
    log-probabilities of that sequence."""
    task, model, sample = setup
    generator = task.build_generator([model], argparse.Namespace(
        beam=4, max_len_a=0, max_len_b=12, unnormalized=True))
    assert isinstance(generator, RestrictedSequenceGenerator)
    assert type(generator.search) is BeamSearch  # a free target: fairseq's own search
    projected = []  # rows of encoder states the first encoder attention projects
    hook = model.decoder.layers[0].encoder_attn.k_proj.register_forward_hook(
        lambda module, inputs, output: projected.append(inputs[0].size(1)))
    hypos = task.inference_step(generator, [model], sample)
    hook.remove()
    assert projected == [6]  # once, per source row: its 4 beams share the keys
    eos = task.dictionary.eos()
    net_input = sample["net_input"]
    for row, nbest in enumerate(hypos):
        assert len(nbest) == 4 and len({tuple(h["tokens"].tolist()) for h in nbest}) == 4
        for hypo in nbest:
            tokens = hypo["tokens"]
            prev = torch.cat([torch.tensor([eos]), tokens[:-1]]).unsqueeze(0)
            with torch.no_grad():
                logits = model(net_input["src_tokens"][row:row + 1],
                               net_input["src_lengths"][row:row + 1], prev)[0][0]
            expected = torch.log_softmax(logits.float(), -1).gather(1, tokens.unsqueeze(1))
            assert torch.allclose(hypo["positional_scores"], expected.squeeze(1), atol=1e-4)


def test_a_free_target_decodes_by_the_search_fairseq_options_choose(setup):
    task, model, sample = setup

    def outputs(**options):
        generator = task.build_generator([model], argparse.Namespace(
            max_len_a=0, max_len_b=12, **options))
        return type(generator.search), [nbest[0]["tokens"].tolist() for nbest in
                                        task.inference_step(generator, [model], sample)]

    search, sampled = outputs(beam=1, sampling=True, sampling_topk=1)
    assert search is Sampling
    assert sampled == outputs(beam=1)[1]  # top-1 sampling is greedy search
