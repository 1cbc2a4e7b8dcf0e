"""The demo's table tasks, built from real tables that pip installs: statsmodels' bundled
datasets (with the variable definitions of their documentation) and vega-datasets'
local ones, plus 4 x 4 Sudoku.

Questions and SQL come from templates; every answer is what the standard library's
sqlite3 returns for the SQL on the table shown, so it is true of that table. Sudoku
puzzles are cut from complete grids while an exhaustive solver (all 288 grids of 4 x 4
Sudoku) still finds exactly one solution.

    python scripts/demo_tables.py OUT_DIR   # writes OUT_DIR/{table_to_text,table_qa,text_to_sql,sudoku}
"""
import argparse
import csv
import itertools
import json
import math
import os
import random
import sqlite3
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from tqdm import tqdm

TABLE_TO_TEXT_INSTRUCTION = ('structured knowledge: " [STRUCT:table,header] " . how to describe '
                             'the tripleset ? -> [TEXT:text]')
TABLE_QA_INSTRUCTION = ('structured knowledge: " [STRUCT:table,header] " . what is the answer '
                        'of the question " [TEXT:question] " ? -> [TEXT:answer]')
TEXT_TO_SQL_INSTRUCTION = ('" [TEXT:question] " ; structured knowledge: " [STRUCT:schema] " . '
                           'generating sql code. -> [TEXT:sql]')
SUDOKU_INSTRUCTION = "solve the sudoku: [STRUCT:puzzle] -> [STRUCT:solution,rows=4,columns=4]"
WINDOW_ROWS = 5  # rows of a table shown to the model (table QA, table-to-text picks one)


class Source(NamedTuple):
    """A real table: its SQL name, key column, value columns with their definitions (as
    its documentation words them), and its rows as text."""

    name: str
    key: str
    key_name: str
    columns: Dict[str, str]
    rows: List[Dict[str, str]]


# column -> definition, shortened from each dataset's documented variable definitions
STATSMODELS = [
    ("longley", "YEAR", "year", {"TOTEMP": "total employment", "GNP": "gnp",
                                 "UNEMP": "number of unemployed",
                                 "ARMED": "size of armed forces", "POP": "population"}),
    ("copper", "YEAR", "year", {"WORLDCONSUMPTION": "world consumption of copper",
                                "COPPERPRICE": "price of copper",
                                "INCOMEINDEX": "index of income per capita",
                                "ALUMPRICE": "price of aluminum"}),
    ("cpunish", "STATE", "state", {"EXECUTIONS": "executions in 1996",
                                   "INCOME": "median income per capita",
                                   "PERPOVERTY": "percent living in poverty",
                                   "VC100k96": "rate of violent crimes"}),
    ("committee", "COMMITTEE", "committee", {"BILLS104": "number of bill assignments",
                                             "SIZE": "number of members",
                                             "SUBS": "number of subcommittees",
                                             "STAFF": "number of staff members"}),
]
VEGA = [
    ("cars", "Name", "car", {"Miles_per_Gallon": "miles per gallon", "Horsepower": "horsepower",
                             "Weight_in_lbs": "weight in pounds",
                             "Acceleration": "acceleration"}),
    ("seattle-weather", "date", "date", {"precipitation": "precipitation",
                                         "temp_max": "highest temperature",
                                         "temp_min": "lowest temperature", "wind": "wind"}),
]


def number_text(value) -> Optional[str]:
    """A number as the tables show it (at most two decimals, no trailing zeros); None
    for a missing value."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number):
        return None
    return f"{round(number, 2):.2f}".rstrip("0").rstrip(".")


def _complete_rows(records, key: str, columns: Sequence[str]) -> List[Dict[str, str]]:
    """Rows with every value present, values as text; the key as written."""
    rows = []
    for record in records:
        values = {c: number_text(record[c]) for c in columns}
        if all(v is not None for v in values.values()):
            key_text = " ".join(str(record[key]).replace("_", " ").split()).lower()
            rows.append({key: number_text(key_text) or key_text, **values})
    return rows


def load_sources() -> List[Source]:
    import importlib

    from vega_datasets import local_data

    sources = []
    for name, key, key_name, columns in STATSMODELS:
        module = importlib.import_module(f"statsmodels.datasets.{name}.data")
        path = os.path.join(os.path.dirname(module.__file__), f"{name}.csv")
        with open(path, newline="", encoding="utf-8-sig") as f:
            records = list(csv.DictReader(f))
        sources.append(Source(name, key, key_name, columns, _complete_rows(records, key, columns)))
    for name, key, key_name, columns in VEGA:
        frame = getattr(local_data, name.replace("-", "_"))()
        frame[key] = frame[key].astype(str).str.slice(0, 10)  # dates as yyyy-mm-dd
        sources.append(Source(name.replace("-", "_"), key, key_name, columns,
                              _complete_rows(frame.to_dict("records"), key, columns)))
    return sources


# -- SQL ------------------------------------------------------------------------------------
def sql_literal(value: str) -> str:
    return value if number_text(value) == value else "'" + value.replace("'", "''") + "'"


def run_sql(source: Source, rows: Sequence[Dict[str, str]], sql: str) -> List[tuple]:
    """``sql`` on ``rows`` of ``source`` as table ``source.name`` (values typed as numbers
    where they are numbers)."""
    columns = [source.key, *source.columns]
    with sqlite3.connect(":memory:") as db:
        db.execute(f"create table {source.name} ({', '.join(c.lower() for c in columns)})")
        db.executemany(f"insert into {source.name} values ({', '.join('?' * len(columns))})",
                       [[_typed(row[c]) for c in columns] for row in rows])
        return db.execute(sql).fetchall()


def _typed(text: str):
    return float(text) if number_text(text) == text else text


def answer_text(result: List[tuple]) -> str:
    value = result[0][0]
    return number_text(value) if isinstance(value, (int, float)) else str(value)


class Question(NamedTuple):
    text: str
    sql: str


def question(rng: random.Random, source: Source, rows: Sequence[Dict[str, str]],
             column: str) -> Question:
    """A templated question about ``column`` of ``rows`` and its SQL (lower case)."""
    table, key, name = source.name, source.key.lower(), source.columns[column]
    col = column.lower()
    row = rng.choice(rows)
    kind = rng.choice(["lookup", "max", "min", "argmax", "count"])
    values = [float(r[column]) for r in rows]
    if kind == "argmax" and values.count(max(values)) > 1:
        kind = "max"  # several rows share the largest value: no single answer
    if kind == "lookup":
        return Question(f"what is the {name} when the {source.key_name} is {row[source.key]} ?",
                        f"select {col} from {table} where {key} = {sql_literal(row[source.key])}")
    if kind in ("max", "min"):
        word = "largest" if kind == "max" else "smallest"
        return Question(f"what is the {word} {name} ?", f"select {kind}({col}) from {table}")
    if kind == "argmax":
        return Question(f"which {source.key_name} has the largest {name} ?",
                        f"select {key} from {table} order by {col} desc limit 1")
    return Question(f"how many rows have a {name} above {row[column]} ?",
                    f"select count(*) from {table} where {col} > {row[column]}")


def _window(rng: random.Random, source: Source, size: int) -> List[Dict[str, str]]:
    start = rng.randrange(len(source.rows) - size + 1)
    return source.rows[start:start + size]


# -- examples -------------------------------------------------------------------------------
def table_to_text_example(rng: random.Random, sources: Sequence[Source]) -> Dict[str, object]:
    source = rng.choice(sources)
    first, second = rng.sample(sorted(source.columns), 2)
    row = rng.choice(source.rows)
    table = [[source.key_name, source.columns[first], source.columns[second]],
             [row[source.key], row[first], row[second]]]
    text = (f"for the {source.key_name} {row[source.key]} , the {source.columns[first]} was "
            f"{row[first]} and the {source.columns[second]} was {row[second]} .")
    return {"table": table, "text": text}


def table_qa_example(rng: random.Random, sources: Sequence[Source], data_dir: str,
                     index: int) -> Dict[str, object]:
    """A question on a window of a real table, written as ``tables/<index>.csv``."""
    source = rng.choice(sources)
    column = rng.choice(sorted(source.columns))
    rows = _window(rng, source, WINDOW_ROWS)
    asked = question(rng, source, rows, column)
    path = os.path.join("tables", f"{index:05d}.csv")
    with open(os.path.join(data_dir, path), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([source.key_name, source.columns[column]])
        writer.writerows([row[source.key], row[column]] for row in rows)
    return {"table": path, "question": asked.text,
            "answer": answer_text(run_sql(source, rows, asked.sql))}


def text_to_sql_example(rng: random.Random, sources: Sequence[Source]) -> Dict[str, object]:
    source = rng.choice(sources)
    asked = question(rng, source, source.rows, rng.choice(sorted(source.columns)))
    assert run_sql(source, source.rows, asked.sql), asked.sql  # the SQL runs and answers
    schema = [[source.name, source.key.lower(), *(c.lower() for c in source.columns)]]
    return {"question": asked.text, "schema": schema, "sql": asked.sql}


def sudoku_grids() -> List[Tuple[int, ...]]:
    """Every complete 4 x 4 Sudoku grid (288), row-major."""
    grids = []
    for cells in itertools.product(itertools.permutations(range(1, 5)), repeat=4):
        grid = sum(cells, ())
        columns_ok = all(len({grid[r * 4 + c] for r in range(4)}) == 4 for c in range(4))
        boxes_ok = all(len({grid[(br + r) * 4 + bc + c] for r in range(2) for c in range(2)}) == 4
                       for br in (0, 2) for bc in (0, 2))
        if columns_ok and boxes_ok:
            grids.append(grid)
    return grids


def solutions(puzzle: Sequence[int], grids: Sequence[Tuple[int, ...]]) -> int:
    """How many complete grids agree with the puzzle's given cells (0: blank)."""
    return sum(all(p in (0, g) for p, g in zip(puzzle, grid)) for grid in grids)


def sudoku_example(rng: random.Random, grids: Sequence[Tuple[int, ...]]) -> Dict[str, object]:
    """A puzzle with one solution: cells are blanked in random order, each kept blank only
    if the solution stays unique, until 6 to 10 cells are blank (fewer when no further
    blank keeps the solution unique)."""
    solution = rng.choice(grids)
    puzzle = list(solution)
    blanks = rng.randint(6, 10)
    for cell in rng.sample(range(16), 16):
        if puzzle.count(0) == blanks:
            break
        puzzle[cell] = 0
        if solutions(puzzle, grids) != 1:
            puzzle[cell] = solution[cell]
    as_rows = lambda cells: [[str(v) for v in cells[r * 4:r * 4 + 4]] for r in range(4)]
    return {"puzzle": as_rows(puzzle), "solution": as_rows(solution)}


# -- files ----------------------------------------------------------------------------------
def _write_split(task_dir: str, split: str, examples) -> None:
    with open(os.path.join(task_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example) + "\n")


def write_table_task(out_dir: str, name: str, train: int = 2000, valid: int = 200,
                     seed: int = 1, test: int = 0) -> str:
    """Write ``out_dir/name/{train,valid[,test]}.jsonl`` for a table task (a test split
    when ``test`` > 0, drawn last); its directory."""
    task_dir = os.path.join(out_dir, name)
    os.makedirs(os.path.join(task_dir, "tables"), exist_ok=True)
    rng = random.Random(seed)
    sources = load_sources() if name != "sudoku" else []
    grids = sudoku_grids() if name == "sudoku" else []
    make = {
        "table_to_text": lambda i: table_to_text_example(rng, sources),
        "table_qa": lambda i: table_qa_example(rng, sources, task_dir, i),
        "text_to_sql": lambda i: text_to_sql_example(rng, sources),
        "sudoku": lambda i: sudoku_example(rng, grids),
    }[name]
    examples = [make(i) for i in tqdm(range(train + valid + test), desc=name, leave=False,
                                            disable=None)]
    _write_split(task_dir, "train", examples[:train])
    _write_split(task_dir, "valid", examples[train:train + valid])
    if test > 0:
        _write_split(task_dir, "test", examples[train + valid:])
    return task_dir


TABLE_TASKS = ("table_to_text", "table_qa", "text_to_sql", "sudoku")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    args = parser.parse_args()
    for name in TABLE_TASKS:
        print(write_table_task(args.out_dir, name))


if __name__ == "__main__":
    main()
