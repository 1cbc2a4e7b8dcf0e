"""Closed-set decoding with a real (random, seeded) model and fairseq's SequenceGenerator.

The reference for every check is computed here independently: each label is
teacher-forced through the model, and at every step the softmax is restricted to
the tokens the label trie allows there (forced prefix tokens: only themselves).
"""
import argparse
import json
import math
import random

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.search import BeamSearch
from fairseq.sequence_generator import SequenceGenerator

import ofasys_fairseq  # noqa: F401  (registrations)
from ofasys_fairseq.decoding.restricted_generator import (Restriction,
                                                          RestrictedSequenceGenerator)
from ofasys_fairseq.modalities.text import LabelConstraint

# a literal forced prefix ("answer:") before the closed-set target
INSTRUCTION = "[TEXT:text] -> answer: [TEXT:label,closed_set]"
LABELS = ["very good", "very bad", "not good", "good"]
WORDS = "the soup was quite nice cold bread room".split()
N_ROWS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("restricted")
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(6)), "label": rng.choice(LABELS)}
            for _ in range(40)]
    for split in ("train", "valid"):
        with open(root / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(root), "--task", "instruction", "--instruction", INSTRUCTION, "--arch", "ofasys_tiny",
        "--embed-dim", "32", "--ffn-embed-dim", "64", "--attention-heads", "4",
        "--encoder-layers", "1", "--decoder-layers", "2", "--dropout", "0.0",
        "--vocab-size", "40", "--num-bins", "4", "--cpu", "--criterion", "instruction_ce",
        "--save-dir", str(root / "checkpoints")])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(7)
    model = task.build_model(cfg.model).eval()
    dataset = task.datasets["valid"]
    sample = dataset.collater([dataset[i] for i in range(N_ROWS)])
    closed_set = sample["closed_set"]
    label_tokens = {label: list(tokens) for tokens, label in closed_set.label_of.items()}
    # the test is only meaningful if labels share token prefixes and some are multi-token
    assert len({tuple(t[:1]) for t in label_tokens.values()}) < len(LABELS)
    assert max(len(t) for t in label_tokens.values()) > 1
    return task, model, sample, closed_set, label_tokens


def prefix_of(sample, row, pad):
    return [t for t in sample["decoder_prefix"][row].tolist() if t != pad]


def reference_scores(model, task, sample, row, label_tokens, trie):
    """log P(label | input) with each step's softmax restricted to the allowed tokens."""
    d = task.target_dictionary
    prefix = prefix_of(sample, row, d.pad())
    src = sample["net_input"]["src_tokens"][row:row + 1]
    src_lengths = sample["net_input"]["src_lengths"][row:row + 1]
    scores = {}
    for label, tokens in label_tokens.items():
        prev = torch.tensor([[d.eos()] + prefix + tokens])
        gold = prefix + tokens + [d.eos()]
        with torch.no_grad():
            logits = model(src, src_lengths, prev)[0][0].double()
        total = 0.0
        for step, token in enumerate(gold):
            if step < len(prefix):
                allowed = [prefix[step]]
            else:
                allowed = trie.allowed(tokens[:step - len(prefix)])
            total += torch.log_softmax(logits[step, allowed], -1)[allowed.index(token)].item()
        scores[label] = total
    return scores


def reference_greedy(model, task, sample, row, trie):
    d = task.target_dictionary
    prefix = prefix_of(sample, row, d.pad())
    src = sample["net_input"]["src_tokens"][row:row + 1]
    src_lengths = sample["net_input"]["src_lengths"][row:row + 1]
    out = []
    while not out or out[-1] != d.eos():
        prev = torch.tensor([[d.eos()] + prefix + out])
        with torch.no_grad():
            logits = model(src, src_lengths, prev)[0][0, -1]
        allowed = trie.allowed(out)
        out.append(allowed[int(logits[allowed].argmax())])
    return out


def decode(task, model, sample, beam, unnormalized=False):
    generator = task.build_generator(
        [model], argparse.Namespace(beam=beam, max_len_a=0, max_len_b=30,
                                    unnormalized=unnormalized))
    assert isinstance(generator, RestrictedSequenceGenerator)
    assert type(generator.search) is BeamSearch  # fairseq's choice; restricted per batch
    return task.inference_step(generator, [model], sample)


@pytest.mark.parametrize("beam", [1, 3, 5])
def test_nbest_holds_distinct_labels_only(setup, beam):
    task, model, sample, closed_set, _ = setup
    eos = task.target_dictionary.eos()
    for row, nbest in enumerate(decode(task, model, sample, beam)):
        assert len(nbest) == min(beam, len(LABELS))
        decoded = []
        for hypo in nbest:
            tokens = hypo["tokens"].tolist()
            assert tokens[-1] == eos and eos not in tokens[:-1], tokens
            assert tokens[:-1] in closed_set.trie
            decoded.append(task.output(sample, row, tokens))
        assert set(decoded) <= set(LABELS)
        assert len(set(decoded)) == len(decoded), decoded


@pytest.mark.parametrize("unnormalized", [True, False])
def test_wide_beam_ranks_labels_by_restricted_probability(setup, unnormalized):
    """With a beam at least as wide as the label set the search is exact: the n-best
    list is every label, best first, scored by its restricted log-probability
    (divided by the decoded length, prefix and eos included, unless unnormalized)."""
    task, model, sample, closed_set, label_tokens = setup
    pad = task.target_dictionary.pad()
    for row, nbest in enumerate(decode(task, model, sample, 5, unnormalized)):
        scores = reference_scores(model, task, sample, row, label_tokens, closed_set.trie)
        length = {label: len(prefix_of(sample, row, pad)) + len(t) + 1
                  for label, t in label_tokens.items()}
        expected = {label: s if unnormalized else s / length[label] for label, s in scores.items()}
        ranking = sorted(expected, key=expected.get, reverse=True)
        decoded = [task.output(sample, row, h["tokens"]) for h in nbest]
        assert decoded[0] == ranking[0]
        assert decoded == ranking
        for label, hypo in zip(decoded, nbest):
            assert float(hypo["score"]) == pytest.approx(expected[label], abs=1e-4)
            # the positional scores are the per-step restricted log-probabilities
            assert float(hypo["positional_scores"].sum()) == pytest.approx(scores[label], abs=1e-4)


def test_beam_one_is_restricted_greedy_decoding(setup):
    task, model, sample, closed_set, _ = setup
    for row, nbest in enumerate(decode(task, model, sample, 1)):
        assert nbest[0]["tokens"].tolist() == reference_greedy(model, task, sample, row,
                                                               closed_set.trie)


def test_top_hypothesis_scores_match_reference_at_every_beam(setup):
    task, model, sample, closed_set, label_tokens = setup
    for beam in (1, 3):
        for row, nbest in enumerate(decode(task, model, sample, beam, unnormalized=True)):
            scores = reference_scores(model, task, sample, row, label_tokens, closed_set.trie)
            for hypo in nbest:
                label = task.output(sample, row, hypo["tokens"])
                assert float(hypo["score"]) == pytest.approx(scores[label], abs=1e-4)
            if beam == 3:  # beam search never does worse than greedy
                greedy = decode(task, model, sample, 1, unnormalized=True)[row][0]
                assert float(nbest[0]["score"]) >= float(greedy["score"]) - 1e-5


def test_forced_prefix_tokens_score_zero(setup):
    task, model, sample, closed_set, _ = setup
    d = task.target_dictionary
    generator = RestrictedSequenceGenerator([model], d, beam_size=3, max_len_b=30)
    prefix = sample["decoder_prefix"]
    restriction = Restriction(LabelConstraint(closed_set, d.eos()),
                              prefix.ne(d.pad()).sum(1).tolist(), sample["id"])
    with torch.no_grad():
        hypos = generator.decode([model], sample, prefix, restriction)
    for row, nbest in enumerate(hypos):
        forced = prefix_of(sample, row, d.pad())
        assert len(forced) > 0
        for hypo in nbest:
            assert hypo["tokens"][:len(forced)].tolist() == forced
            assert torch.all(hypo["positional_scores"][:len(forced)].abs() < 1e-6)
            assert hypo["tokens"][len(forced):-1].tolist() in closed_set.trie

    # fairseq's own generator keeps the full-vocabulary log-probability of forced tokens
    plain = SequenceGenerator([model], d, beam_size=3, max_len_b=30)
    with torch.no_grad():
        hypos = plain.generate([model], sample, prefix_tokens=prefix)
    prefix_scores = torch.cat([h["positional_scores"][:len(prefix_of(sample, r, d.pad()))]
                               for r, nbest in enumerate(hypos) for h in nbest])
    assert prefix_scores.max() < -1e-3
    assert math.isfinite(float(prefix_scores.sum()))


def test_inference_step_strips_the_prefix(setup):
    task, model, sample, closed_set, _ = setup
    eos = task.target_dictionary.eos()
    for nbest in decode(task, model, sample, 3):
        for hypo in nbest:
            assert len(hypo["tokens"]) == len(hypo["positional_scores"])
            assert hypo["tokens"][-1] == eos
            assert hypo["tokens"][:-1].tolist() in closed_set.trie


def test_beam_wider_than_the_label_set_stops_when_labels_run_out(setup):
    task, model, sample, closed_set, label_tokens = setup
    pad = task.target_dictionary.pad()
    steps = []
    hook = model.decoder.output_projection.register_forward_hook(lambda *_: steps.append(1))
    try:
        generator = task.build_generator(
            [model], argparse.Namespace(beam=8, max_len_a=0, max_len_b=200))
        hypos = task.inference_step(generator, [model], sample)
    finally:
        hook.remove()
    for row, nbest in enumerate(hypos):
        assert sorted(task.output(sample, row, h["tokens"]) for h in nbest) == sorted(LABELS)
    # one decoder step per token: the forced prefix, the longest label and its eos
    longest = max(len(prefix_of(sample, r, pad)) for r in range(N_ROWS)) + \
        max(len(t) for t in label_tokens.values()) + 1
    assert len(steps) == longest


def test_a_constrained_target_is_decoded_by_beam_search_only(setup):
    task, model, sample, _, _ = setup
    generator = task.build_generator([model], argparse.Namespace(
        beam=2, max_len_a=0, max_len_b=30, sampling=True, sampling_topk=2))
    with pytest.raises(ValueError, match="decoded within a constraint, by beam search; "
                                         "Sampling .--sampling"):
        task.inference_step(generator, [model], sample)
