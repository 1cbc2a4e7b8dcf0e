"""The demo's speech: digit strings and real English sentences spoken by eSpeak NG
(``ofasys_fairseq/modalities/espeak.py``, library and voices from the ``espeakng-loader``
wheel) with many voices, variants, speeds and pitches. Validation rows are spoken by voice
variants that training never hears, at 22.05 kHz as eSpeak NG writes them (the AUDIO
modality resamples to 16 kHz). The sentences are prose every installation has: Python's
language reference (``pydoc_data``) and statsmodels' dataset descriptions.

This is synthetic, rule-based speech: real enough to carry the words in its signal (a
model must learn to hear them), far more regular than human speech.

    python scripts/demo_speech.py OUT_DIR   # OUT_DIR/digits_speech, sentences_speech (many
                                            # voices), digits_tts, sentences_tts (one voice):
                                            # {train,valid}.jsonl and wavs
"""
import argparse
import importlib
import json
import os
import pkgutil
import random
import re
from typing import List, NamedTuple, Sequence

import numpy as np
import soundfile
from tqdm import tqdm

from ofasys_fairseq.modalities.espeak import ENGLISH_VOICES, VARIANTS, ESpeak
from ofasys_fairseq.modalities.phone.convert import text_to_phones

ASR_INSTRUCTION = "[AUDIO:wav] what is the text corresponding to the voice ? -> [TEXT:text]"
PHONES_INSTRUCTION = "[AUDIO:wav] what are the phones of the voice ? -> [PHONE:phones]"
TTS_INSTRUCTION = "[TEXT:text] read it aloud -> [AUDIO:wav,frames_per_step=4]"
# text-to-speech learns one voice: every row, training and validation, is spoken by it
TTS_SPEAKER_RATE, TTS_SPEAKER_PITCH = 160, 50
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HELD_OUT_VARIANTS = ("m7", "f5")  # validation voices only
RATES, PITCHES = (130, 200), (30, 70)  # words per minute, pitch: ranges drawn from


class Speaker(NamedTuple):
    voice: str  # language voice + variant
    rate: int
    pitch: int


def speakers(count: int, held_out: bool, rng: random.Random) -> List[Speaker]:
    variants = HELD_OUT_VARIANTS if held_out else [v for v in VARIANTS
                                                   if v not in HELD_OUT_VARIANTS]
    return [Speaker(f"{rng.choice(ENGLISH_VOICES)}+{rng.choice(variants)}",
                    rng.randint(*RATES), rng.randint(*PITCHES)) for _ in range(count)]


def digit_strings(count: int, rng: random.Random, shortest: int = 2,
                  longest: int = 4) -> List[str]:
    """Spoken digit strings ("seven two nine"), as Free Spoken Digits but connected."""
    return [" ".join(rng.choice(DIGITS) for _ in range(rng.randint(shortest, longest)))
            for _ in range(count)]


def real_sentences(shortest: int = 5, longest: int = 12) -> List[str]:
    """The distinct sentences of ``shortest`` to ``longest`` words in Python's language
    reference and statsmodels' dataset descriptions, as transcripts are usually written for
    recognition: lower case, words only (sentences with digits, symbols or code are left
    out: their spoken form is ambiguous)."""
    import pydoc_data.topics
    import statsmodels.datasets

    texts = list(pydoc_data.topics.topics.values())
    for module in pkgutil.iter_modules(statsmodels.datasets.__path__):
        try:
            dataset = importlib.import_module(f"statsmodels.datasets.{module.name}.data")
        except ImportError:  # utilities, not datasets
            continue
        texts += [getattr(dataset, name, "") for name in ("DESCRLONG", "NOTE")]
    sentences = []
    for paragraph in (p for text in texts for p in re.split(r"\n\s*\n", text)):
        paragraph = " ".join(paragraph.split())
        for sentence in re.split(r"(?<=[a-z][.!?])\s+(?=[A-Z])", paragraph):
            if re.fullmatch(r"[A-Z][A-Za-z ,;'\-]+[.!?]", sentence):
                words = transcript(sentence)
                if shortest <= len(words.split()) <= longest:
                    sentences.append(words)
    return sorted(set(sentences))


def transcript(sentence: str) -> str:
    """A sentence as the demo's transcripts write it: lower case words, no punctuation."""
    return " ".join(re.sub(r"[^a-z']+", " ", sentence.lower()).split())


def write_sentences_task(root: str, voices_per_sentence: int = 2, valid: int = 60,
                         test: int = 0, seed: int = 0) -> str:
    """Every ``real_sentences`` sentence spoken ``voices_per_sentence`` times for training;
    ``valid`` of them again by held-out voice variants, and ``test`` more (drawn after
    validation's, which stay the same); returns the data directory."""
    rng = random.Random(seed)
    sentences = real_sentences()
    out_dir = os.path.join(root, "sentences_speech")
    train = sentences * voices_per_sentence
    write_split(out_dir, "train", train, speakers(len(train), False, rng))
    write_split(out_dir, "valid", rng.sample(sentences, valid), speakers(valid, True, rng))
    if test:
        write_split(out_dir, "test", rng.sample(sentences, test), speakers(test, True, rng))
    return out_dir


def write_sentences_tts_task(root: str, valid: int = 30, seed: int = 0,
                             voice: str = "en-us+m3") -> str:
    """``real_sentences`` in one voice (text-to-speech); ``valid`` of them are held out of
    training."""
    sentences = real_sentences()
    random.Random(seed).shuffle(sentences)
    out_dir = os.path.join(root, "sentences_tts")
    speaker = Speaker(voice, TTS_SPEAKER_RATE, TTS_SPEAKER_PITCH)
    write_split(out_dir, "train", sentences[valid:], [speaker] * (len(sentences) - valid))
    write_split(out_dir, "valid", sentences[:valid], [speaker] * valid)
    return out_dir


def write_split(out_dir: str, split: str, texts: Sequence[str], voices: Sequence[Speaker]) -> None:
    """``split.jsonl`` rows ``{"wav": "wavs/<split>-<i>.wav", "text": ..., "phones": ...}``
    and their wavs; the phones are those eSpeak NG speaks in the speaker's accent."""
    engine = ESpeak.get()
    os.makedirs(os.path.join(out_dir, "wavs"), exist_ok=True)
    with open(os.path.join(out_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
        for i, (text, speaker) in enumerate(tqdm(list(zip(texts, voices)), desc=split,
                                                  leave=False, disable=None)):
            name = f"wavs/{split}-{i}.wav"
            samples = engine.synthesize(text, *speaker)
            soundfile.write(os.path.join(out_dir, name), samples.astype(np.int16),
                            engine.sample_rate)
            phones = text_to_phones(text, speaker.voice.split("+")[0])
            f.write(json.dumps({"wav": name, "text": text, "phones": phones,
                                "voice": speaker.voice, "rate": speaker.rate,
                                "pitch": speaker.pitch}, ensure_ascii=False) + "\n")


def write_digits_task(root: str, train: int = 600, valid: int = 60, seed: int = 0) -> str:
    """Spoken digit strings with their text and phones; returns the data directory."""
    rng = random.Random(seed)
    out_dir = os.path.join(root, "digits_speech")
    write_split(out_dir, "train", digit_strings(train, rng), speakers(train, False, rng))
    write_split(out_dir, "valid", digit_strings(valid, rng), speakers(valid, True, rng))
    return out_dir


def write_digits_tts_task(root: str, train: int = 600, valid: int = 60, test: int = 0,
                          seed: int = 0, voice: str = "en-us+m3", longest: int = 4) -> str:
    """Digit strings (two to ``longest`` digits) and their sound in one voice
    (text-to-speech); validation and test rows are digit strings training never reads."""
    rng = random.Random(seed)
    out_dir = os.path.join(root, "digits_tts")
    speaker = Speaker(voice, TTS_SPEAKER_RATE, TTS_SPEAKER_PITCH)
    # as many draws whatever ``test`` is: training and validation strings stay the same
    texts = list(dict.fromkeys(digit_strings(4 * (train + valid), rng, longest=longest)))
    splits = {"train": train, "valid": valid, "test": test}
    if len(texts) < sum(splits.values()):
        raise ValueError(f"{sum(splits.values())} distinct digit strings asked, "
                         f"{len(texts)} drawn")
    first = 0
    for split, count in splits.items():
        if count:
            write_split(out_dir, split, texts[first:first + count], [speaker] * count)
        first += count
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--valid", type=int, default=60)
    args = parser.parse_args()
    print(write_digits_task(args.out_dir, args.train, args.valid))
    print(write_digits_tts_task(args.out_dir, args.train, args.valid))
    print(write_sentences_task(args.out_dir))
    print(write_sentences_tts_task(args.out_dir))


if __name__ == "__main__":
    main()
