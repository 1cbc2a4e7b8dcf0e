"""The demo's table sets (``scripts/demo_tables.py``): answers checked against the tables
by plain Python, SQL run, Sudoku puzzles with exactly one solution."""
import csv
import itertools
import json
import os

import demo_tables
import pytest


def rows_of(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    return {name: demo_tables.write_table_task(str(root), name, train=150, valid=30, seed=4)
            for name in demo_tables.TABLE_TASKS}


def test_sources_are_real_tables_with_their_documented_columns():
    sources = {s.name: s for s in demo_tables.load_sources()}
    assert {"longley", "copper", "cpunish", "committee", "cars", "seattle_weather"} <= set(sources)
    longley = sources["longley"]
    assert len(longley.rows) == 16 and longley.rows[0]["YEAR"] == "1947"
    assert longley.rows[0]["TOTEMP"] == "60323"  # Longley (1967), total employment in 1947


def test_table_qa_answers_are_true_of_the_csv_table(written):
    checked = 0
    for row in rows_of(os.path.join(written["table_qa"], "train.jsonl")):
        with open(os.path.join(written["table_qa"], row["table"]), encoding="utf-8") as f:
            header, *table = list(csv.reader(f))
        values = [float(v) for _, v in table]
        question = row["question"]
        if question.startswith("what is the largest"):
            assert float(row["answer"]) == max(values)
        elif question.startswith("what is the smallest"):
            assert float(row["answer"]) == min(values)
        elif question.startswith("how many rows have"):
            threshold = float(question.split(" above ")[1].rstrip(" ?"))
            assert int(row["answer"]) == sum(v > threshold for v in values)
        elif question.startswith("which"):
            assert [row["answer"]] == [k for k, v in table if float(v) == max(values)]
        else:
            key = question.split(f"when the {header[0]} is ")[1].rstrip(" ?")
            assert float(row["answer"]) in [float(v) for k, v in table if k == key]
        checked += 1
    assert checked == 150


def test_text_to_sql_reads_the_schema_it_shows(written):
    for row in rows_of(os.path.join(written["text_to_sql"], "valid.jsonl")):
        [[table, *columns]] = row["schema"]
        assert f" from {table}" in row["sql"]
        named = row["sql"].replace("(", " ").replace(")", " ").split()
        assert any(column in named for column in columns)


def test_sudoku_puzzles_have_exactly_one_solution(written):
    grids = demo_tables.sudoku_grids()
    assert len(grids) == 288  # every 4 x 4 Sudoku grid
    for row in rows_of(os.path.join(written["sudoku"], "valid.jsonl")):
        puzzle = [int(c) for c in itertools.chain(*row["puzzle"])]
        solution = [int(c) for c in itertools.chain(*row["solution"])]
        assert puzzle.count(0) <= 10
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        assert demo_tables.solutions(puzzle, grids) == 1
