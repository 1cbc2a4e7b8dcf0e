"""PHONE: phones as their own tokens, the phone set from the training split (kept by
the checkpoint), decoding to phones only, the phone error rate, and text to phones with
eSpeak NG (``ofasys-phonemize``)."""
import json

import pytest

from ofasys_fairseq.data.table import DataError
from ofasys_fairseq.modalities import Corpus, get_modality
from ofasys_fairseq.modalities.phone.convert import convert, main, text_to_phones
from ofasys_fairseq.modalities.phone.modality import phone_symbol, read_phones
from ofasys_fairseq.scoring.wer import PerScorer, WerScorerConfig

from tests.helpers import allowed_tokens, instruction_task, write_jsonl

TRAIN = [{"text": "seven two", "phones": "s ˈɛ v ə n t ˈuː"},
         {"text": "nine", "phones": ["n", "ˈaɪ", "n"]}]


@pytest.fixture
def task(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    task = instruction_task(tmp_path, "[TEXT:text] -> [PHONE:phones]")
    task.prepare()
    return task


def test_cells_are_spaced_phones_or_a_json_list():
    slot = "[PHONE:p]"
    assert read_phones("h  iː t ", slot) == ["h", "iː", "t"]
    assert read_phones('["h", "iː"]', slot) == read_phones(["h", "iː"], slot) == ["h", "iː"]
    for cell, message in [("", "found an empty cell"), (3, "found int"),
                          ("[oops", "must be a JSON list of phones"),
                          (["a b"], "holds a space")]:
        with pytest.raises(ValueError, match=message):
            read_phones(cell, slot)


def test_the_training_phones_become_symbols_of_the_dictionary(task):
    assert task.modality_settings["PHONE"]["phones"] == sorted(
        {"s", "ˈɛ", "v", "ə", "n", "t", "ˈuː", "ˈaɪ"})
    dictionary = task.dictionary
    assert all(dictionary.index(phone_symbol(p)) != dictionary.unk()
               for p in task.modality_settings["PHONE"]["phones"])
    # the vocabulary, phones included, travels in the task state
    restored = instruction_task(task.cfg.data, "[TEXT:text] -> [PHONE:phones]")
    restored.load_state_dict(task.state_dict())
    assert list(restored.dictionary.symbols) == list(dictionary.symbols)


def test_tokens_decode_back_and_decoding_emits_phones_only(task):
    phone = get_modality("PHONE")
    slot = task.plan.target
    ctx = task.context("PHONE")
    value = phone.read("n ˈaɪ n", slot, ctx)
    tokens = phone.tokens(value, slot, ctx, None)
    assert phone.postprocess(tokens, slot, ctx, None) == "n ˈaɪ n"
    allowed = allowed_tokens(phone.constraint(slot, ctx), [], len(task.dictionary))
    assert sorted(allowed) == sorted(
        [task.dictionary.index(phone_symbol(p)) for p in task.modality_settings["PHONE"]["phones"]]
        + [task.dictionary.eos()])


def test_a_phone_outside_the_training_set_is_a_located_error(task, tmp_path):
    write_jsonl(tmp_path / "valid.jsonl", [{"text": "eight", "phones": "ˈeɪ t"}])
    with pytest.raises(DataError) as error:
        task.load_dataset("valid")
    assert (error.value.line, error.value.column) == (1, "phones")
    assert "phone(s) ˈeɪ are not in this model's phone set (8 phones" in str(error.value)


def test_generate_prints_phones_with_or_without_spaces():
    phone = get_modality("PHONE")
    assert phone.format_generated("<phone:h> <phone:iː>", {}) == "h iː"
    assert phone.format_generated("<phone:h><phone:iː>", {}) == "h iː"  # --post-process
    assert phone.format_generated("hello there", {}) is None


def test_phone_error_rate_is_fairseqs_word_error_rate_over_phones(task):
    phone = get_modality("PHONE")
    pairs = [("s ˈɛ v ə n", "s ˈɛ v n"), ("t ˈuː", "t ˈuː ˈuː"), ("n ˈaɪ n", "n ˈaɪ n")]
    stats = phone.metric_stats([p for _, p in pairs], [r for r, _ in pairs], task.plan.target,
                               ["per"], Corpus([r for r, _ in pairs]))
    assert stats == {"_per_errors": 2, "_per_phones": 10}  # a deletion, an insertion
    scorer = PerScorer(WerScorerConfig())
    for reference, prediction in pairs:
        scorer.add_string(reference, prediction)
    assert scorer.result_string() == "PER: 20.00"


def test_text_to_phones_with_espeak():
    assert text_to_phones("seven") == "s ˈɛ v ə n"
    assert text_to_phones("He turned sharply.") == "h iː t ˈɜː n d ʃ ˈɑːɹ p l i"
    with pytest.raises(ValueError, match="no phones in"):
        text_to_phones("...")


def test_the_converter_adds_a_phone_column(tmp_path, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"text": "nine", "id": 1}, {"text": "two", "id": 2}])
    main([str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")])
    rows = [json.loads(line) for line in open(tmp_path / "out.jsonl", encoding="utf-8")]
    assert rows == [{"text": "nine", "id": 1, "phones": "n ˈaɪ n"},
                    {"text": "two", "id": 2, "phones": "t ˈuː"}]
    assert "2 rows written" in capsys.readouterr().out
    with pytest.raises(ValueError,
                       match=r"eSpeak NG has no voice 'en-gb' \(English ones: en-us, "):
        convert(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), "text", "phones",
                voice="en-gb")
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "one"}, {"words": "two"}])
    with pytest.raises(DataError, match=r"bad.jsonl, line 2, column 'text': no column 'text'"):
        convert(str(tmp_path / "bad.jsonl"), str(tmp_path / "out.jsonl"), "text", "phones")
