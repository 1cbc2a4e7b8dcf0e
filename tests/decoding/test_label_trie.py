"""LabelTrie: which tokens may follow a prefix of a closed label set."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ofasys_fairseq.decoding.label_trie import LabelTrie

EOS = 2
# "very good", "very bad", "not good", "good", "good enough": shared prefixes, a label that
# is a prefix of another, and a label that is a suffix of another
LABELS = [(10, 11), (10, 12), (13, 11), (11,), (11, 14)]


@pytest.fixture
def trie():
    return LabelTrie(LABELS, eos=EOS)


def test_allowed_at_the_root_are_the_first_tokens(trie):
    assert sorted(trie.allowed([])) == [10, 11, 13]


def test_allowed_after_a_shared_prefix_lists_every_continuation(trie):
    assert sorted(trie.allowed([10])) == [11, 12]
    assert trie.allowed([13]) == [11]


def test_a_finished_label_allows_only_eos(trie):
    for label in [(10, 11), (10, 12), (13, 11), (11, 14)]:
        assert trie.allowed(list(label)) == [EOS]


def test_a_label_that_prefixes_another_allows_eos_and_the_continuation(trie):
    assert sorted(trie.allowed([11])) == sorted([EOS, 14])


def test_prefixes_outside_the_set_allow_nothing(trie):
    assert trie.allowed([12]) == []
    assert trie.allowed([10, 13]) == []
    assert trie.allowed([10, 11, EOS]) == []  # past the end of a label
    assert trie.allowed([10, 11, 11]) == []


def test_accepts_tensors_and_numpy_integers(trie):
    import numpy as np
    import torch
    assert sorted(trie.allowed(torch.tensor([10]))) == [11, 12]
    assert sorted(trie.allowed(np.array([10], dtype=np.int64))) == [11, 12]
    assert torch.tensor([13, 11]) in trie


def test_membership_is_exact(trie):
    for label in LABELS:
        assert list(label) in trie
        assert tuple(label) in trie
    assert [10] not in trie  # a strict prefix of labels
    assert [] not in trie
    assert [10, 11, 14] not in trie
    assert [12] not in trie
    assert [10, 11, EOS] not in trie  # eos is implied, not part of the label


def test_empty_label_set_is_refused():
    with pytest.raises(ValueError, match="at least one label"):
        LabelTrie([], eos=EOS)


def test_empty_label_is_just_eos():
    trie = LabelTrie([(), (5,)], eos=EOS)
    assert sorted(trie.allowed([])) == sorted([EOS, 5])
    assert [] in trie and [5] in trie


def test_duplicate_labels_are_one_path():
    trie = LabelTrie([(4, 5), (4, 5)], eos=EOS)
    assert trie.allowed([]) == [4]
    assert trie.allowed([4]) == [5]
    assert trie.max_branching == 1


def test_max_branching(trie):
    # root: 10, 11, 13; after 10: 11, 12; after 11: eos, 14
    assert trie.max_branching == 3


# --- against a brute-force reference ---------------------------------------------------

labels_strategy = st.lists(st.lists(st.integers(4, 9), min_size=0, max_size=4).map(tuple),
                           min_size=1, max_size=8)


def reference_allowed(labels, prefix):
    prefix = tuple(prefix)
    allowed = set()
    for label in labels:
        full = label + (EOS,)
        if len(full) > len(prefix) and full[:len(prefix)] == prefix:
            allowed.add(full[len(prefix)])
    return allowed


@settings(max_examples=150, deadline=None)
@given(labels=labels_strategy, probe=st.lists(st.integers(2, 9), max_size=5))
def test_matches_brute_force(labels, probe):
    trie = LabelTrie(labels, eos=EOS)
    assert set(trie.allowed(probe)) == reference_allowed(labels, probe)
    assert len(trie.allowed(probe)) == len(set(trie.allowed(probe)))
    assert (tuple(probe) in trie) == (tuple(probe) in set(labels))
    # every prefix of every label (eos included) is reachable step by step
    for label in labels:
        full = label + (EOS,)
        for i in range(len(full)):
            assert full[i] in trie.allowed(full[:i])
    prefixes = {label[:i] for label in labels for i in range(len(label) + 1)}
    assert trie.max_branching == max(len(reference_allowed(labels, p)) for p in prefixes)


@settings(max_examples=100, deadline=None)
@given(labels=labels_strategy,
       probes=st.lists(st.lists(st.integers(0, 15), max_size=5), min_size=1, max_size=6))
def test_mask_of_many_prefixes_matches_brute_force(labels, probes):
    """Beam search asks for all hypotheses at once (right-padded tensors, token ids
    anywhere in the vocabulary, including ids no label holds)."""
    trie = LabelTrie(labels, eos=EOS)
    width = max(1, max(len(p) for p in probes))
    tokens = torch.tensor([p + [1] * (width - len(p)) for p in probes])
    mask = trie.allowed_mask(tokens, torch.tensor([len(p) for p in probes]), vocab_size=16)
    for probe, row in zip(probes, mask):
        assert set(row.nonzero().squeeze(1).tolist()) == reference_allowed(labels, probe)
