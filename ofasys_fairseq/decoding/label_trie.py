"""A trie over the token sequences of a closed label set.

It answers one question, both for the criterion (which tokens compete at each
step of a gold label) and for beam search (which tokens may come next): given
the tokens produced so far, which tokens continue some label? Every sequence
ends with ``eos``, so a finished label allows exactly ``eos`` next.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple


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

    def __contains__(self, sequence: Sequence[int]) -> bool:
        node = self._root
        for token in list(sequence) + [self.eos]:
            node = node.get(int(token))
            if node is None:
                return False
        return not node


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
