"""Vocabulary: dictionary layout, encode/decode, checkpoint state, and how the
sentencepiece model is trained (cached by content) or supplied by the user."""
import hashlib
import io
import logging
import os
import pickle
import random
import subprocess
import sys

import pytest
import sentencepiece as spm
from fairseq.data import Dictionary

from ofasys_fairseq.data.vocabulary import (MASK_SYMBOL, Vocabulary, load_sentencepiece,
                                            train_sentencepiece)
from ofasys_fairseq.modalities.box import bin_symbol
from tests.helpers import instruction_task, sentences, write_jsonl

CORPUS = sentences(40, seed=0) + ["year 2024 had 365 days", "Hello, World!"]
FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


@pytest.fixture(scope="module")
def proto(tmp_path_factory) -> bytes:
    return train_sentencepiece(CORPUS, 80, str(tmp_path_factory.mktemp("spm-cache")))


def bins(count: int):
    """BOX's reserved location tokens."""
    return [bin_symbol(k) for k in range(count)]


@pytest.fixture(scope="module")
def vocab(proto) -> Vocabulary:
    return Vocabulary(proto, bins(5))


def spm_files(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".model"))


# --- dictionary layout ----------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [0, 1, 17])
def test_dictionary_layout(proto, num_bins):
    processor = spm.SentencePieceProcessor(model_proto=proto)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if i != processor.unk_id()]
    vocab = Vocabulary(proto, bins(num_bins))
    symbols = list(vocab.dictionary.symbols)
    # fairseq specials, then the pieces in sentencepiece order, then <mask>, then the
    # modalities' reserved symbols (here BOX's bins)
    assert symbols == (FAIRSEQ_SPECIALS + pieces + [MASK_SYMBOL]
                       + [f"<bin_{k}>" for k in range(num_bins)])
    d = vocab.dictionary
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert vocab.mask_index == 4 + len(pieces)
    assert [d.index(bin_symbol(k)) for k in range(num_bins)] == \
        list(range(vocab.mask_index + 1, vocab.mask_index + 1 + num_bins))
    assert vocab.subword_ids == range(4, 4 + len(pieces))
    assert len(d) == 5 + len(pieces) + num_bins


def test_vocabulary_fills_the_given_dictionary_in_place(proto):
    dictionary = Dictionary()
    vocab = Vocabulary(proto, bins(3), dictionary)
    assert vocab.dictionary is dictionary and len(dictionary) == vocab.mask_index + 1 + 3
    with pytest.raises(ValueError, match="fresh Dictionary"):
        Vocabulary(proto, bins(3), dictionary)


# --- encode / decode -------------------------------------------------------------------


def test_encode_matches_sentencepiece_pieces(vocab, proto):
    processor = spm.SentencePieceProcessor(model_proto=proto)
    for text in CORPUS[:10] + ["the dog sat on a red rug"]:
        pieces = processor.encode(text, out_type=str)
        assert vocab.encode(text) == [vocab.dictionary.index(p) for p in pieces]


def test_encode_decode_round_trip(vocab):
    for text in CORPUS + ["a lazy bird sings over the big mat", "cat", "2024"]:
        ids = vocab.encode(text)
        assert all(i in vocab.subword_ids for i in ids)
        assert vocab.decode(ids) == text
    assert vocab.encode("") == [] and vocab.decode([]) == ""


def test_decode_skips_specials_mask_and_bins(vocab):
    d = vocab.dictionary
    ids = vocab.encode("the quick brown fox")
    noisy = [d.bos()] + ids[:2] + [vocab.mask_index, d.index(bin_symbol(4))] + ids[2:] \
        + [d.eos(), d.pad(), d.pad()]
    assert vocab.decode(noisy) == "the quick brown fox"


def test_unknown_characters_map_to_unk(vocab):
    ids = vocab.encode("the ZZZ cat")  # 'Z' never occurs in the corpus
    assert vocab.dictionary.unk() in ids
    assert "the" in vocab.decode(ids) and "cat" in vocab.decode(ids)


def test_digits_are_split(vocab):
    pieces = [vocab.dictionary[i] for i in vocab.encode("in 2024")]
    digit_pieces = [p.lstrip("\u2581") for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces == ["2", "0", "2", "4"]


# --- checkpoint state and pickling ---------------------------------------------------------


def test_state_dict_round_trip(vocab):
    state = vocab.state_dict()
    dictionary = Dictionary()
    restored = Vocabulary.from_state_dict(state, dictionary)
    assert restored.dictionary is dictionary
    assert list(dictionary.symbols) == list(vocab.dictionary.symbols)
    assert restored.encode(CORPUS[3]) == vocab.encode(CORPUS[3])
    assert restored.mask_index == vocab.mask_index
    assert restored.reserved_symbols == vocab.reserved_symbols == bins(5)


def test_state_dict_with_other_symbols_is_refused(vocab):
    state = dict(vocab.state_dict())
    symbols = list(state["symbols"])
    state["symbols"] = symbols[:5] + symbols[6:]  # a sentencepiece piece is missing
    with pytest.raises(ValueError, match="does not match"):
        Vocabulary.from_state_dict(state)


def test_vocabulary_pickles_without_its_processor(vocab):
    vocab.encode("warm up the processor")
    copy = pickle.loads(pickle.dumps(vocab))
    assert copy.encode(CORPUS[5]) == vocab.encode(CORPUS[5])
    assert copy.decode(vocab.encode(CORPUS[5])) == CORPUS[5]


# --- training and its cache ---------------------------------------------------------------


def expected_cache_name(texts, vocab_size, model_type="bpe"):
    """The cache file name, re-derived: sha256 over the non-blank texts (one per line)
    and the training settings."""
    digest = hashlib.sha256()
    digest.update("".join(t + "\n" for t in texts if t.strip()).encode("utf-8"))
    digest.update(f"{vocab_size}:{model_type}".encode())
    return f"spm-{digest.hexdigest()[:20]}.model"


def test_training_writes_one_cache_file_named_by_content(tmp_path):
    cache = tmp_path / "cache"
    proto = train_sentencepiece(CORPUS, 70, str(cache))
    assert spm_files(cache) == [expected_cache_name(CORPUS, 70)]
    assert (cache / expected_cache_name(CORPUS, 70)).read_bytes() == proto
    assert [f for f in os.listdir(cache) if f.endswith(".tmp")] == []


def test_second_training_reuses_the_cached_file(tmp_path, caplog):
    cache = str(tmp_path)
    train_sentencepiece(CORPUS, 70, cache)
    (name,) = spm_files(cache)
    # Put a different (valid) model under that name: a second call returns it, which it
    # can only do by reading the cache instead of training again.
    other = train_sentencepiece(CORPUS[:20], 40)
    with open(os.path.join(cache, name), "wb") as f:
        f.write(other)
    with caplog.at_level(logging.INFO, logger="ofasys_fairseq.data.vocabulary"):
        again = train_sentencepiece(CORPUS, 70, cache)
    assert again == other
    assert "reusing sentencepiece model" in caplog.text
    assert "training a sentencepiece model" not in caplog.text
    # blank texts do not change the content hash
    assert train_sentencepiece(["", "  "] + CORPUS + ["\n"], 70, cache) == other
    assert spm_files(cache) == [name]


def test_other_settings_or_texts_train_another_model(tmp_path):
    cache = str(tmp_path)
    train_sentencepiece(CORPUS, 70, cache)
    train_sentencepiece(CORPUS, 60, cache)
    train_sentencepiece(CORPUS[1:], 70, cache)
    assert spm_files(cache) == sorted([expected_cache_name(CORPUS, 70),
                                       expected_cache_name(CORPUS, 60),
                                       expected_cache_name(CORPUS[1:], 70)])


def test_training_is_deterministic_and_vocab_size_is_an_upper_bound(proto):
    assert train_sentencepiece(CORPUS, 80) == proto  # no cache: trained again, same bytes
    processor = spm.SentencePieceProcessor(model_proto=train_sentencepiece(CORPUS, 5000))
    assert 0 < processor.get_piece_size() < 5000  # a tiny corpus: fewer pieces, no error


def test_training_needs_some_text():
    with pytest.raises(ValueError, match="no text"):
        train_sentencepiece(["", "   "], 50)


def test_task_trains_into_the_private_cache_and_reuses_it(tmp_path, caplog):
    # the task's default cache lives under XDG_CACHE_HOME, which conftest makes private
    write_jsonl(tmp_path / "train.jsonl", [{"src": s, "tgt": s.upper()} for s in CORPUS])
    cache = os.path.join(os.environ["XDG_CACHE_HOME"], "ofasys_fairseq")
    before = set(spm_files(cache)) if os.path.isdir(cache) else set()
    first = instruction_task(tmp_path, "[TEXT:src] -> [TEXT:tgt]", vocab_size=90)
    first.prepare()
    (new_file,) = set(spm_files(cache)) - before
    with open(os.path.join(cache, new_file), "rb") as f:
        assert f.read() == first.vocab.sentencepiece_model
    second = instruction_task(tmp_path, "[TEXT:src] -> [TEXT:tgt]", vocab_size=90)
    with caplog.at_level(logging.INFO, logger="ofasys_fairseq.data.vocabulary"):
        second.prepare()
    assert "reusing sentencepiece model" in caplog.text
    assert set(spm_files(cache)) - before == {new_file}
    assert list(second.dictionary.symbols) == list(first.dictionary.symbols)


TASK_VOCAB_SCRIPT = """
import hashlib, sys
from tests.helpers import instruction_task
task = instruction_task(sys.argv[1], "[TEXT:src] and [TEXT:topic] -> [TEXT:tgt]",
                        vocab_size=80, vocab_cache_dir=sys.argv[2])
task.prepare()
print(hashlib.sha256(task.vocab.sentencepiece_model).hexdigest())
"""


def test_task_vocabulary_does_not_depend_on_the_hash_seed(tmp_path):
    rng = random.Random(0)
    words = CORPUS[0].split() + CORPUS[1].split()
    write_jsonl(tmp_path / "train.jsonl", [
        {"src": " ".join(rng.choice(words) for _ in range(6)),
         "topic": rng.choice(["alpha", "beta", "gamma"]),
         "tgt": " ".join(rng.choice(words) for _ in range(3))} for _ in range(40)])
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = []
    for hash_seed in ("1", "2"):  # fixed seeds: the outcome is reproducible
        env = dict(os.environ, PYTHONHASHSEED=hash_seed,
                   PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]))
        runs.append(subprocess.Popen(
            [sys.executable, "-c", TASK_VOCAB_SCRIPT, str(tmp_path), str(tmp_path / "cache")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    digests = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        if run.returncode != 0:
            raise RuntimeError(err[-2000:])
        digests.append(out.split()[-1])
    assert digests[0] == digests[1]


# --- a user-supplied model ------------------------------------------------------------------


def test_load_user_model(tmp_path, proto):
    path = tmp_path / "user.model"
    path.write_bytes(proto)
    assert load_sentencepiece(str(path)) == proto


def test_load_user_model_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(ValueError, match=f"{bad}: not a valid sentencepiece model"):
        load_sentencepiece(str(bad))
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty}: not a valid sentencepiece model"):
        load_sentencepiece(str(empty))
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_sentencepiece(str(tmp_path / "missing.model"))


def test_task_uses_the_user_model_instead_of_training(tmp_path):
    # a model trained outside ofasys with sentencepiece's defaults (<s> and </s> pieces)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model,
                                   vocab_size=60, hard_vocab_limit=False, minloglevel=2)
    path = tmp_path / "user.model"
    path.write_bytes(model.getvalue())
    write_jsonl(tmp_path / "train.jsonl", [{"src": "only these words", "tgt": "x"}])
    cache = tmp_path / "cache"
    task = instruction_task(tmp_path, "[TEXT:src] -> [TEXT:tgt]", sentencepiece_model=str(path),
                            vocab_cache_dir=str(cache), num_bins=4)
    task.prepare()
    assert not cache.exists()  # nothing trained
    assert task.vocab.sentencepiece_model == model.getvalue()
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
    assert pieces <= set(task.dictionary.symbols)
    # sentencepiece's own <s>/</s> pieces land on fairseq's: no duplicates in the dictionary
    assert len(set(task.dictionary.symbols)) == len(task.dictionary.symbols)
    assert task.dictionary.symbols[-6:] == [f"<bin_{k}>" for k in range(4)] + [
        "<table_cell>", "<table_row>"]  # the modalities' symbols, in registration order
    for text in CORPUS[:5]:
        assert task.vocab.decode(task.vocab.encode(text)) == text


# --- a bounded sample of the training rows -----------------------------------------------------

def test_sampled_rows_are_bounded_seeded_and_in_file_order():
    from ofasys_fairseq.tasks.instruction_task import sampled_rows
    assert list(sampled_rows(5, 0, seed=1)) == list(sampled_rows(5, 9, seed=1)) == [0, 1, 2, 3, 4]
    rows = sampled_rows(1000, 50, seed=1)
    assert len(rows) == len(set(rows)) == 50 and list(rows) == sorted(rows)
    assert list(rows) == list(sampled_rows(1000, 50, seed=1))
    assert list(rows) != list(sampled_rows(1000, 50, seed=2))


def test_the_vocabulary_reads_a_sample_and_the_labels_every_row(tmp_path, caplog):
    from ofasys_fairseq.tasks.instruction_task import sampled_rows
    rows = [{"src": s, "tgt": "common"} for s in sentences(200, seed=3)]
    unsampled = next(i for i in range(200) if i not in set(sampled_rows(200, 40, seed=1)))
    rows[unsampled] = {"src": "a zebra grazes", "tgt": "rare"}  # outside the sample
    write_jsonl(tmp_path / "train.jsonl", rows)
    task = instruction_task(tmp_path, "[TEXT:src] -> [TEXT:tgt,closed_set]",
                            vocab_sample_rows=40)
    with caplog.at_level(logging.INFO):
        task.prepare()
    assert "vocabulary texts from 40 of the 200 training rows" in caplog.text
    assert task.labels == {"tgt": ["common", "rare"]}
    assert "▁zebra" not in task.dictionary.symbols  # a word only the unsampled row holds
