"""The demo's speech data (``scripts/demo_speech.py``): real English sentences from prose
every installation has, spoken by many voices for recognition (validation by voices
training never hears) and by one voice for text-to-speech (validation sentences never
read in training)."""
import json
import re

import demo_speech  # scripts/ is on the path
import pytest
import soundfile


def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_real_sentences_are_distinct_words_only_transcripts():
    sentences = demo_speech.real_sentences()
    assert len(sentences) >= 250 and len(set(sentences)) == len(sentences)
    assert all(re.fullmatch(r"[a-z']+( [a-z']+){4,11}", s) for s in sentences)
    assert "a class definition is an executable statement" in sentences  # Python's reference


def test_recognition_rows_are_spoken_sentences_with_unheard_validation_voices(tmp_path):
    data = demo_speech.write_sentences_task(str(tmp_path), voices_per_sentence=1, valid=10)
    train, valid = rows(f"{data}/train.jsonl"), rows(f"{data}/valid.jsonl")
    assert [r["text"] for r in train] == demo_speech.real_sentences()
    assert {r["text"] for r in valid} <= set(demo_speech.real_sentences()) and len(valid) == 10
    variants = lambda split: {r["voice"].split("+")[1] for r in split}  # noqa: E731
    assert variants(valid) <= set(demo_speech.HELD_OUT_VARIANTS)
    assert not variants(train) & set(demo_speech.HELD_OUT_VARIANTS)
    for row in valid:
        info = soundfile.info(f"{data}/{row['wav']}")
        # at most 200 words a minute, and pauses: over 0.2 s a word
        assert info.duration > 0.2 * len(row["text"].split()) and row["phones"]


def test_text_to_speech_rows_hold_out_their_validation_sentences(tmp_path):
    data = demo_speech.write_sentences_tts_task(str(tmp_path), valid=12)
    train, valid = rows(f"{data}/train.jsonl"), rows(f"{data}/valid.jsonl")
    assert len(valid) == 12 and not {r["text"] for r in valid} & {r["text"] for r in train}
    assert len(train) + len(valid) == len(demo_speech.real_sentences())
    assert {r["voice"] for r in train + valid} == {"en-us+m3"}


def test_recognition_test_rows_are_drawn_after_validation_which_stays_the_same(tmp_path):
    without = demo_speech.write_sentences_task(str(tmp_path / "a"), voices_per_sentence=1,
                                               valid=10)
    with_test = demo_speech.write_sentences_task(str(tmp_path / "b"), voices_per_sentence=1,
                                                 valid=10, test=15)
    for split in ("train", "valid"):
        assert rows(f"{without}/{split}.jsonl") == rows(f"{with_test}/{split}.jsonl")
    test = rows(f"{with_test}/test.jsonl")
    assert len(test) == 15 and {r["voice"].split("+")[1] for r in test} <= set(
        demo_speech.HELD_OUT_VARIANTS)
    assert all(soundfile.info(f"{with_test}/{r['wav']}").frames > 0 for r in test)


def test_text_to_speech_test_strings_are_never_read_in_training_or_validation(tmp_path):
    kwargs = dict(train=50, valid=10, longest=3)
    without = demo_speech.write_digits_tts_task(str(tmp_path / "a"), **kwargs)
    with_test = demo_speech.write_digits_tts_task(str(tmp_path / "b"), test=20, **kwargs)
    for split in ("train", "valid"):
        assert rows(f"{without}/{split}.jsonl") == rows(f"{with_test}/{split}.jsonl")
    texts = lambda split: [r["text"] for r in rows(f"{with_test}/{split}.jsonl")]  # noqa: E731
    assert len(set(texts("test"))) == 20
    assert not set(texts("test")) & (set(texts("train")) | set(texts("valid")))


def test_text_to_speech_refuses_more_strings_than_it_can_draw(tmp_path):
    # two-digit strings only: 100 exist
    with pytest.raises(ValueError, match="distinct digit strings asked"):
        demo_speech.write_digits_tts_task(str(tmp_path), train=90, valid=10, test=20,
                                          longest=2)
