"""The VQA score (VQAv2's accuracy): an answer is right in proportion to how many human
answers match it, ``min(matches / 3, 1)``, averaged over the 10-choose-9 subsets of the
references, after the official evaluation's answer normalization (GT-Vision-Lab/VQA,
``vqaEval.py`` as of its commit a013f00 "Fixed processing answers bug": prediction and
answers are normalized alike, and only when the humans disagree), reproduced here with
its quirks so that scores compare with papers."""
import re
from dataclasses import dataclass
from typing import Sequence

from fairseq.dataclass import FairseqDataclass
from fairseq.scoring import register_scorer

from .references import MultiReferenceScorer

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">",
                "<", "@", "`", ",", "?", "!"]
# as written in the official code: the first group is a lookahead, not a lookbehind
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(\,)(\d)")
# the official code passes re.UNICODE (32) where re.sub takes its count
_PERIODS_REMOVED = 32
MATCHES_FOR_FULL_CREDIT = 3


def _strip_punctuation(text: str) -> str:
    out = text
    for mark in _PUNCTUATION:
        if mark + " " in text or " " + mark in text or _DIGIT_COMMA_DIGIT.search(text):
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, _PERIODS_REMOVED)


def _digits_and_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares it (``"Two dogs."`` -> ``"2 dogs"``)."""
    return _digits_and_articles(_strip_punctuation(text))


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """The VQA accuracy of one prediction, in [0, 1].

    Args:
        prediction: the model's answer.
        answers: the human answers (VQAv2 has ten per question).
    """
    if not answers:
        raise ValueError("the VQA score needs at least one reference answer")
    answers = [_one_line(a) for a in answers]
    prediction = _one_line(prediction)
    # the official evaluation normalizes only when the humans disagree
    if len(set(answers)) > 1:
        answers = [normalize_answer(a) for a in answers]
        prediction = normalize_answer(prediction)
    total = 0.0
    for left_out in range(len(answers)):
        matches = sum(a == prediction for i, a in enumerate(answers) if i != left_out)
        total += min(1.0, matches / MATCHES_FOR_FULL_CREDIT)
    return total / len(answers)


@dataclass
class VqaScoreConfig(FairseqDataclass):
    pass


@register_scorer("vqa_score", dataclass=VqaScoreConfig)
class VqaScoreScorer(MultiReferenceScorer):
    """``fairseq-generate --scoring vqa_score``: the mean VQA score x 100 over every
    reference answer of each row."""

    name = "VQA score"

    def example_score(self, prediction: str, references: Sequence[str]) -> float:
        return vqa_score(prediction, references)
