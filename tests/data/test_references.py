"""A target cell holding several references (COCO's captions, VQA's answers): one is
trained on per row and epoch, every one reaches the metrics, in JSONL and in TSV."""
import json

import pytest

from ofasys_fairseq.data.table import DataError
from tests.helpers import instruction_task, sentences, write_jsonl

OPEN = "[TEXT:question] answer: -> [TEXT:answers]"
CLOSED = "[TEXT:question] answer: -> [TEXT:answers,closed_set]"
QUESTIONS = sentences(30, seed=3)
ANSWERS = [["red cat", "a red cat", "cat"], ["dog"], ["big bird", "bird"]]


def rows(count=30):
    return [{"question": q, "answers": ANSWERS[i % 3]} for i, q in enumerate(QUESTIONS[:count])]


@pytest.fixture
def jsonl_dir(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", rows())
    write_jsonl(tmp_path / "valid.jsonl", rows(6))
    return tmp_path


def loaded(data_dir, instruction, split):
    task = instruction_task(data_dir, instruction)
    task.load_dataset(split)
    return task, task.datasets[split]


def decoded_target(task, item):
    return task.vocab.decode(item.target[:-1] if item.target[-1] == task.dictionary.eos()
                             else item.target)


def test_validation_keeps_every_reference_and_targets_the_first(jsonl_dir):
    task, valid = loaded(jsonl_dir, OPEN, "valid")
    assert valid.references == [ANSWERS[i % 3] for i in range(6)]
    batch = valid.collater([valid[i] for i in range(6)])
    assert batch["references"] == [ANSWERS[i % 3] for i in range(6)]
    assert [decoded_target(task, valid[i]) for i in range(3)] == ["red cat", "dog", "big bird"]
    # batches are sized for the longest reference
    assert valid.tgt_sizes[0] == 1 + max(len(task.vocab.encode(a)) for a in ANSWERS[0])


def test_training_draws_one_reference_per_row_and_epoch(jsonl_dir):
    task, train = loaded(jsonl_dir, OPEN, "train")
    seen = set()
    for epoch in range(1, 9):
        train.set_epoch(epoch)
        drawn = decoded_target(task, train[0])
        assert drawn in ANSWERS[0]
        assert decoded_target(task, train[0]) == drawn  # a function of (seed, epoch, row)
        seen.add(drawn)
    assert seen == set(ANSWERS[0])


def test_closed_set_trains_only_on_references_in_the_label_set(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"question": q, "answers": ["yes"]}
                                           for q in QUESTIONS[:10]])
    write_jsonl(tmp_path / "valid.jsonl", [{"question": QUESTIONS[0],
                                            "answers": ["maybe", "yes", "perhaps"]},
                                           {"question": QUESTIONS[1],
                                            "answers": ["maybe", "perhaps"]}])
    task = instruction_task(tmp_path, CLOSED)
    with pytest.raises(DataError, match=r"valid.jsonl, line 2, column 'answers': none of the 2 "
                                        r"references is one of the 1 closed-set labels"):
        task.load_dataset("valid")
    task.cfg.skip_invalid_rows = True
    task.load_dataset("valid")
    valid = task.datasets["valid"]
    assert valid.references == [["maybe", "yes", "perhaps"]]
    assert decoded_target(task, valid[0]) == "yes"


def test_tsv_cells_holding_json_lists_are_references(tmp_path):
    for split, count in (("train", 30), ("valid", 3)):
        lines = ["question\tanswers"] + [f"{r['question']}\t{json.dumps(r['answers'])}"
                                          for r in rows(count)]
        (tmp_path / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task, valid = loaded(tmp_path, OPEN, "valid")
    assert valid.references == ANSWERS


def test_a_target_that_only_looks_like_a_list_stays_text(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"question": q, "answers": "[1, 2] and [3"}
                                           for q in QUESTIONS[:10]])
    task, train = loaded(tmp_path, OPEN, "train")
    assert decoded_target(task, train[0]) == "[1, 2] and [3"


def test_an_empty_list_of_references_is_an_error(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", rows(5) + [{"question": "a", "answers": []}])
    with pytest.raises(DataError, match=r"line 6, column 'answers': expected at least one "
                                        r"reference"):
        loaded(tmp_path, OPEN, "train")
