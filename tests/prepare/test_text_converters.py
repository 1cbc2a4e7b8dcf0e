"""``ofasys-prepare glue`` and ``table`` on tiny files in their official layouts: rows
written with plain column names, every bad line counted with its reason; the output
trains as written (its columns are what the README instruction reads)."""
import json

import pytest

from ofasys_fairseq.prepare import main
from ofasys_fairseq.prepare.glue import TASKS
from tests.helpers import instruction_task


def rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def tsv(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(fields) + "\n" for fields in lines))


def test_glue_rte_with_a_test_file_for_prediction(tmp_path, capsys):
    rte = tmp_path / "glue_data" / "RTE"
    header = ["index", "sentence1", "sentence2", "label"]
    tsv(rte / "train.tsv", [header, ["0", 'He said "yes', "He agreed.", "entailment"],
                            ["1", "A cat sat.", "A dog sat.", "not_entailment"],
                            ["2", "broken line", "entailment"]])
    tsv(rte / "dev.tsv", [header, ["0", "It rains.", "It is wet.", "entailment"]])
    tsv(rte / "test.tsv", [["index", "sentence1", "sentence2"], ["0", "Sun.", "Day."]])
    out = tmp_path / "rte"
    main(["glue", str(rte), str(out)])
    printed = capsys.readouterr().out
    assert rows(out / "train.jsonl") == [
        {"sentence1": 'He said "yes', "sentence2": "He agreed.", "label": "entailment"},
        {"sentence1": "A cat sat.", "sentence2": "A dog sat.", "label": "not_entailment"}]
    assert rows(out / "test.jsonl") == [{"sentence1": "Sun.", "sentence2": "Day."}]
    assert "skipped 1: line with a wrong number of fields" in printed
    # the rows train as written
    task = instruction_task(out, "[TEXT:sentence1] [TEXT:sentence2] -> [TEXT:label,closed_set]")
    task.load_dataset("valid")
    assert len(task.datasets["valid"]) == 1


def test_glue_cola_has_no_header_and_words_for_labels(tmp_path, capsys):
    cola = tmp_path / "CoLA"
    tsv(cola / "train.tsv", [["gj04", "1", "", "The sailors rode the breeze."],
                             ["gj04", "0", "*", "The more books I ask to whom he will give."],
                             ["gj04", "2", "", "odd label"]])
    tsv(cola / "test.tsv", [["index", "sentence"], ["0", "Bill whistled."]])
    out = tmp_path / "cola"
    main(["glue", str(cola), str(out)])
    assert rows(out / "train.jsonl") == [
        {"sentence": "The sailors rode the breeze.", "label": "acceptable"},
        {"sentence": "The more books I ask to whom he will give.", "label": "unacceptable"}]
    assert "skipped 1: label that is not 0 or 1" in capsys.readouterr().out
    assert rows(out / "test.jsonl") == [{"sentence": "Bill whistled."}]


def test_glue_mnli_keeps_matched_and_mismatched_apart(tmp_path):
    mnli = tmp_path / "MNLI"
    header = ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "gold_label"]
    for name in ("dev_matched", "dev_mismatched"):
        tsv(mnli / f"{name}.tsv", [header, ["0", "1", "2", "fiction", f"{name} p", "h",
                                            "neutral"]])
    main(["glue", str(mnli), str(tmp_path / "out")])
    assert rows(tmp_path / "out" / "valid.jsonl") == [
        {"premise": "dev_matched p", "hypothesis": "h", "label": "neutral"}]
    assert rows(tmp_path / "out" / "valid_mismatched.jsonl")[0]["premise"] == "dev_mismatched p"


def test_glue_refuses_an_unknown_task_and_a_missing_column(tmp_path):
    tsv(tmp_path / "SQuAD" / "train.tsv", [["a"], ["b"]])
    with pytest.raises(SystemExit, match="unknown GLUE task 'SQuAD'"):
        main(["glue", str(tmp_path / "SQuAD"), str(tmp_path / "out")])
    tsv(tmp_path / "RTE" / "train.tsv", [["index", "premise", "label"], ["0", "x", "y"]])
    with pytest.raises(SystemExit, match=r"no column\(s\) sentence1, sentence2 in its header"):
        main(["glue", str(tmp_path / "RTE"), str(tmp_path / "out")])
    assert set(TASKS) == {"CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE",
                          "WNLI"}


def test_table_chooses_renames_and_rebases_paths(tmp_path, capsys):
    source = tmp_path / "raw" / "reviews.csv"
    source.parent.mkdir()
    source.write_text('file_name,text,stars,extra\n'
                      'img/a.png,"great, really",5,x\n'
                      'img/b.png,,1,y\n'
                      '/abs/c.png,fine,3,z\n')
    out = tmp_path / "data" / "reviews"
    main(["table", str(source), str(out), "--subset", "train", "--columns",
          "image=file_name,review=text,stars", "--path-columns", "image"])
    assert rows(out / "train.jsonl") == [
        {"image": "../../raw/img/a.png", "review": "great, really", "stars": "5"},
        {"image": "/abs/c.png", "review": "fine", "stars": "3"}]
    assert "skipped 1: empty cell in column review" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"no column\(s\) label in its header"):
        main(["table", str(source), str(out), "--subset", "train", "--columns", "label"])
    with pytest.raises(SystemExit, match="--path-columns picture: not among --columns"):
        main(["table", str(source), str(out), "--subset", "train", "--columns", "text",
              "--path-columns", "picture"])
