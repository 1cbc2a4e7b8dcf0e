"""The demo's table tasks through fairseq's tools: table-to-text, table QA over CSV
files, text-to-SQL and Sudoku trained together, Sudoku decoded to its shape by
fairseq-generate and OFASys.inference (a list of rows)."""
import json
import re

import demo_tables  # the demo's data, as `make demo` writes it (scripts/ is on the path)
import pytest

from tests.test_end_to_end import MODEL_ARGS, USER_DIR, fairseq, valid_metrics

from ofasys_fairseq import OFASys
from ofasys_fairseq.modalities.struct import parse_linearized

pytestmark = pytest.mark.slow

INSTRUCTIONS = {"table_to_text": demo_tables.TABLE_TO_TEXT_INSTRUCTION,
                "table_qa": demo_tables.TABLE_QA_INSTRUCTION,
                "text_to_sql": demo_tables.TEXT_TO_SQL_INSTRUCTION,
                "sudoku": demo_tables.SUDOKU_INSTRUCTION}
METRICS = {"table_to_text": ["bleu"], "table_qa": ["exact_match"],
           "text_to_sql": ["exact_match"], "sudoku": ["cell_accuracy", "exact_match"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    tasks = {name: {"instruction": instruction,
                    "data": demo_tables.write_table_task(str(root), name, train=400, valid=40),
                    "weight": 3 if name == "sudoku" else 1, "metrics": METRICS[name]}
             for name, instruction in INSTRUCTIONS.items()}
    (root / "tasks.yaml").write_text(json.dumps({"tasks": tasks}))
    args = [a for a in MODEL_ARGS if a not in ("--vocab-size", "120")]
    log = fairseq("train", "--user-dir", USER_DIR, "--task", "multitask", "--tasks",
                  str(root / "tasks.yaml"), "--task-sampling", "weights", *args,
                  "--vocab-size", "300", "--max-update", "240",
                  "--save-dir", str(root / "ck"))
    return {"root": root, "tasks": tasks, "log": log,
            "checkpoint": str(root / "ck" / "checkpoint_last.pt")}


def test_every_table_task_trains_and_reports_its_metrics(trained):
    first, last = valid_metrics(trained["log"])[0], valid_metrics(trained["log"])[-1]
    for metric in ("table_to_text_bleu", "table_qa_exact_match", "text_to_sql_exact_match",
                   "sudoku_cell_accuracy", "sudoku_exact_match"):
        assert metric in last, trained["log"][-3000:]
    # 240 updates teach the tables' shapes and words (a tiny model solves Sudoku after
    # some 600 updates of its own: the demo shows it)
    for task in INSTRUCTIONS:
        assert float(last[f"{task}_loss"]) < 0.9 * float(first[f"{task}_loss"]), (first, last)


def test_generate_keeps_sudoku_outputs_to_the_grid(trained):
    data = trained["tasks"]["sudoku"]["data"]
    out = fairseq("generate", data, "--user-dir", USER_DIR, "--task", "instruction",
                  "--trained-task", "sudoku", "--path", trained["checkpoint"],
                  "--gen-subset", "valid", "--beam", "3", "--batch-size", "16", "--cpu",
                  "--post-process", "sentencepiece", "--scoring", "cell_accuracy")
    outputs = {int(i): parse_linearized(h)
               for i, h in re.findall(r"^D-(\d+)\t\S+\t(.*)$", out, re.M)}
    targets = {int(i): parse_linearized(t) for i, t in re.findall(r"^T-(\d+)\t(.*)$", out, re.M)}
    assert len(outputs) == len(targets) == 40
    assert all(len(rows) == 4 and all(len(row) == 4 for row in rows)
               for rows in outputs.values())
    correct = sum(p == t for i in targets for pr, tr in zip(outputs[i], targets[i])
                  for p, t in zip(pr, tr))
    assert f"cell_accuracy = {100 * correct / 640:.2f} ({correct}/640 cells)" in out


def test_inference_returns_rows_and_reads_csv_tables(trained):
    model = OFASys.from_pretrained(trained["checkpoint"])
    puzzle = [["0", "3", "2", "0"], ["0", "4", "3", "0"], ["4", "0", "0", "0"],
              ["3", "1", "4", "0"]]
    [solved] = model.inference(data=[{"puzzle": puzzle}], task="sudoku")
    assert len(solved["solution"]) == 4 and all(len(row) == 4 for row in solved["solution"])
    qa_dir = trained["tasks"]["table_qa"]["data"]
    row = json.loads((trained["root"] / "table_qa" / "valid.jsonl").read_text().splitlines()[0])
    [answer] = model.inference(data=[{"table": f"{qa_dir}/{row['table']}",
                                      "question": row["question"]}], task="table_qa")
    assert isinstance(answer["answer"], str)
