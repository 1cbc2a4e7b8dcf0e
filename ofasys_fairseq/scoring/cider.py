"""CIDEr-D, the captioning metric of the COCO caption evaluation (pycocoevalcap), with
the document frequencies computed once from a reference corpus so that examples can be
scored one at a time (validation scores batch by batch and sums across processes)."""
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import register_scorer

from .references import MultiReferenceScorer

MAX_NGRAM_ORDER = 4
LENGTH_PENALTY_SIGMA = 6.0

Ngram = Tuple[str, ...]

# PTBTokenizer splits these clitics off as tokens of their own ("dog's" -> "dog 's").
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'m|'ll|'d)\b")
_TOKEN = re.compile(
    r"""n't(?!\w) | '(?:s|re|ve|m|ll|d)(?!\w)   # clitics split off above
      | \d+(?:[.,]\d+)+                         # 3.5, 1,000
      | \w+(?:[-'&]\w+)*                        # t-shirt, o'clock
      | \S                                      # any other symbol on its own""",
    re.VERBOSE,
)
# The tokens COCO's evaluation drops after PTB tokenization (quotes, brackets, ...).
_PUNCTUATION_CHARS = set(".?!,:;-'`\"(){}")


def tokenize_caption(text: str) -> str:
    """Lower-cases ``text`` and splits it into space-separated tokens without
    punctuation, approximating COCO's PTBTokenizer (Java) + punctuation removal.

    Args:
        text: a raw caption, e.g. ``"A dog's toy."``, tokenized as ``"a dog 's toy"``.
    """
    text = _CLITIC.sub(r" \1", text.lower())
    tokens = _TOKEN.findall(text)
    return " ".join(token for token in tokens if not set(token) <= _PUNCTUATION_CHARS)


def _ngram_counts(tokenized: str) -> Counter:
    words = tokenized.split()
    return Counter(
        tuple(words[start : start + order])
        for order in range(1, MAX_NGRAM_ORDER + 1)
        for start in range(len(words) - order + 1)
    )


class CiderD:
    """CIDEr-D with tf-idf weights from a fixed reference corpus.

    Args:
        references: the corpus, one list of reference captions per example; as in
            pycocoevalcap, these should be the references of the evaluated set.
    """

    def __init__(self, references: Sequence[Sequence[str]]):
        if not references:
            raise ValueError("CIDEr-D needs at least one example of references")
        self.document_frequency: Counter = Counter()
        for example_references in references:
            ngrams = set()
            for ref in example_references:
                ngrams.update(_ngram_counts(tokenize_caption(ref)))
            self.document_frequency.update(ngrams)
        self.log_num_examples = math.log(len(references))

    def _tfidf(self, counts: Counter) -> Tuple[List[Dict[Ngram, float]], List[float], int]:
        vectors: List[Dict[Ngram, float]] = [{} for _ in range(MAX_NGRAM_ORDER)]
        for ngram, term_frequency in counts.items():
            idf = self.log_num_examples - math.log(max(1.0, self.document_frequency[ngram]))
            vectors[len(ngram) - 1][ngram] = term_frequency * idf
        norms = [math.sqrt(sum(weight**2 for weight in vector.values())) for vector in vectors]
        # pycocoevalcap measures length in bigrams (words - 1); kept for identical scores.
        length = sum(count for ngram, count in counts.items() if len(ngram) == 2)
        return vectors, norms, length

    def score(self, candidate: str, references: Sequence[str]) -> float:
        """The example's CIDEr-D (about 1.0 for a good caption, up to 10).

        Args:
            candidate: the generated caption (raw text; it is tokenized here).
            references: the example's reference captions (raw text).
        """
        if not references:
            raise ValueError("CIDEr-D needs at least one reference caption per example")
        candidate_vectors, candidate_norms, candidate_length = self._tfidf(
            _ngram_counts(tokenize_caption(candidate))
        )
        total = 0.0
        for reference in references:
            ref_counts = _ngram_counts(tokenize_caption(reference))
            ref_vectors, ref_norms, ref_length = self._tfidf(ref_counts)
            length_penalty = math.exp(
                -((candidate_length - ref_length) ** 2) / (2 * LENGTH_PENALTY_SIGMA**2)
            )
            for order in range(MAX_NGRAM_ORDER):
                ref_vector = ref_vectors[order]
                # The "-D" clipping: a repeated n-gram earns no more than the reference has.
                similarity = sum(
                    min(weight, ref_vector.get(ngram, 0.0)) * ref_vector.get(ngram, 0.0)
                    for ngram, weight in candidate_vectors[order].items()
                )
                if candidate_norms[order] != 0 and ref_norms[order] != 0:
                    similarity /= candidate_norms[order] * ref_norms[order]
                total += similarity * length_penalty
        return 10.0 * total / MAX_NGRAM_ORDER / len(references)

    def corpus_score(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        """The mean of the examples' CIDEr-D, i.e. pycocoevalcap's corpus score.

        Args:
            candidates: one generated caption per example.
            references: one list of reference captions per example.
        """
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
        if not candidates:
            raise ValueError("CIDEr-D of an empty corpus is undefined")
        return sum(map(self.score, candidates, references)) / len(candidates)


@dataclass
class CiderDConfig(FairseqDataclass):
    pass


@register_scorer("cider", dataclass=CiderDConfig)
class CiderDScorer(MultiReferenceScorer):
    """``fairseq-generate --scoring cider``: corpus CIDEr-D x 100 (as captioning papers
    report it) over every reference of each row; the document frequencies come from the
    references of the scored rows."""

    name = "CIDEr-D"

    def score(self) -> float:
        if not self.pred:
            return 0.0
        return 100.0 * CiderD(self.references).corpus_score(self.pred, self.references)
