"""A trie over the token sequences of a closed label set.

It answers one question, both for the criterion (which tokens compete at each
step of a gold label) and for beam search (which tokens may come next): given
the tokens produced so far, which tokens continue some label? Every sequence
ends with ``eos``, so a finished label allows exactly ``eos`` next.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch


class LabelTrie:
    """Args:
        sequences: the token ids of each label (without ``eos``).
        eos: the end-of-sequence id appended to every label.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], eos: int):
        if not sequences:
            raise ValueError("a closed label set needs at least one label")
        self.eos = eos
        self._root: Dict[int, dict] = {}
        for seq in sequences:
            node = self._root
            for token in list(seq) + [eos]:
                node = node.setdefault(int(token), {})
        self.max_branching = max(self._branching(self._root), 1)
        self._tables: Dict[torch.device, TrieTables] = {}

    def _branching(self, node: Dict[int, dict]) -> int:
        return max([len(node)] + [self._branching(child) for child in node.values()])

    def allowed(self, prefix: Sequence[int]) -> List[int]:
        """Tokens that extend ``prefix`` towards a label; empty if ``prefix`` left the set."""
        node = self._root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return []
        return list(node.keys())

    def allowed_mask(self, generated: torch.Tensor, lengths: torch.Tensor,
                     vocab_size: int) -> torch.Tensor:
        """``allowed`` for many prefixes at once, as tensors (beam search's hypotheses).

        Args:
            generated: ``(n, width)`` token ids, right-padded.
            lengths: ``(n,)`` how many of each row's ids form its prefix.
            vocab_size: columns of the mask (every token id is below it).
        Returns:
            ``(n, vocab_size)`` bool; a row whose prefix left the set allows nothing.
        """
        tables = self._tables_on(generated.device)
        node = torch.zeros_like(lengths)  # the root; -1: left the set
        for column in range(generated.size(1)):
            token = generated[:, column]
            key = node * tables.key_base + token
            edge = torch.searchsorted(tables.edge_keys, key).clamp_(max=len(tables.edge_keys) - 1)
            found = ((tables.edge_keys[edge] == key) & (node >= 0) & (token >= 0)
                     & (token < tables.key_base))
            child = torch.where(found, tables.edge_children[edge], torch.full_like(node, -1))
            node = torch.where(column < lengths, child, node)
        # scatter each live node's continuations (a CSR row of the node table)
        alive = node.clamp(min=0)
        counts = torch.where(node >= 0, tables.next_start[alive + 1] - tables.next_start[alive], 0)
        hypothesis = torch.repeat_interleave(torch.arange(len(node), device=node.device), counts)
        offsets = torch.arange(int(counts.sum()), device=node.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts)
        tokens = tables.next_tokens[torch.repeat_interleave(tables.next_start[alive], counts)
                                    + offsets]
        mask = torch.zeros(len(node), vocab_size, dtype=torch.bool, device=node.device)
        mask[hypothesis, tokens] = True
        return mask

    def _tables_on(self, device: torch.device) -> "TrieTables":
        if device not in self._tables:
            self._tables[device] = TrieTables.of(self._root, device)
        return self._tables[device]

    def __contains__(self, sequence: Sequence[int]) -> bool:
        node = self._root
        for token in list(sequence) + [self.eos]:
            node = node.get(int(token))
            if node is None:
                return False
        return not node


class TrieTables(NamedTuple):
    """A trie as tensors: nodes numbered breadth first (the root is 0); an edge is
    found by its key ``node * key_base + token`` among the sorted ``edge_keys``; a
    node's next tokens are ``next_tokens[next_start[node]:next_start[node + 1]]``."""

    key_base: int
    edge_keys: torch.Tensor
    edge_children: torch.Tensor
    next_start: torch.Tensor
    next_tokens: torch.Tensor

    @classmethod
    def of(cls, root: Dict[int, dict], device: torch.device) -> "TrieTables":
        nodes, edges = [root], []  # edges: (parent number, token, child number)
        for number, node in enumerate(nodes):  # grows while it is read: breadth first
            for token, child in node.items():
                edges.append((number, token, len(nodes)))
                nodes.append(child)
        key_base = max(token for _, token, _ in edges) + 1
        keys = torch.tensor([parent * key_base + token for parent, token, _ in edges])
        order = keys.argsort()
        next_start = torch.tensor([0] + [len(node) for node in nodes]).cumsum(0)
        next_tokens = torch.tensor([token for node in nodes for token in node])
        children = torch.tensor([child for _, _, child in edges])
        return cls(key_base, keys[order].to(device), children[order].to(device),
                   next_start.to(device), next_tokens.to(device))


@dataclass(frozen=True)
class ClosedSet:
    """The labels a closed-set target may take, and their token trie.

    (A dataclass, not a NamedTuple: fairseq's ``apply_to_sample`` rebuilds tuples.)"""

    labels: Tuple[str, ...]
    trie: LabelTrie
    label_of: Dict[Tuple[int, ...], str]  # token ids -> label text

    @classmethod
    def build(cls, labels: Sequence[str], encode: Callable[[str], List[int]],
              eos: int) -> "ClosedSet":
        """Args:
            labels: the label texts (duplicates are dropped).
            encode: text -> token ids of the shared vocabulary.
            eos: the end-of-sequence id.
        """
        labels = tuple(dict.fromkeys(labels))
        sequences = [tuple(encode(label)) for label in labels]
        return cls(labels, LabelTrie(sequences, eos), dict(zip(sequences, labels)))
