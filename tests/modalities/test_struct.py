"""STRUCT: every accepted form of a table, linearized as the original (` : `, ` | `),
cut at row boundaries, bad tables reported with file, line and column, and output
tables parsed back into rows under a shape constraint."""
import json
import logging

import pytest

from ofasys_fairseq.data.table import DataError, InvalidRows
from ofasys_fairseq.modalities import get_modality
from ofasys_fairseq.modalities.struct import linearize, parse_linearized, read_table
from ofasys_fairseq.modalities.struct.accuracy import cell_accuracy_counts
from ofasys_fairseq.modalities.struct.modality import CELL_SYMBOL, ROW_SYMBOL, ShapeConstraint
from ofasys_fairseq.plan import TaskPlan
from tests.helpers import (allowed_in_one_batch, allowed_tokens, instruction_task,
                           write_jsonl)

TABLE_TO_TEXT = ('structured knowledge: " [STRUCT:table,header] " . how to describe the '
                 'tripleset ? -> [TEXT:text]')
ROWS = [["year", "employed"], ["1947", "60323"], ["1948", "61122"], ["1949", "60171"]]
CSV = "year,employed\n1947,60323\n1948,61122\n1949,60171\n"


@pytest.mark.parametrize("cell", [
    ROWS, json.dumps(ROWS), {"year": [1947, 1948, 1949], "employed": [60323, 61122, 60171]},
    json.dumps({"year": ["1947", "1948", "1949"], "employed": ["60323", "61122", "60171"]}),
    "year : employed | 1947 : 60323 | 1948 : 61122 | 1949 : 60171", "longley.csv",
    "longley.tsv"])
def test_every_form_reads_as_the_same_rows(tmp_path, cell):
    (tmp_path / "longley.csv").write_text(CSV)
    (tmp_path / "longley.tsv").write_text(CSV.replace(",", "\t"))
    assert read_table(cell, str(tmp_path)) == ROWS
    assert linearize(ROWS) == "year : employed | 1947 : 60323 | 1948 : 61122 | 1949 : 60171"


def test_linearized_text_keeps_empty_cells_and_inner_colons():
    assert parse_linearized("a : : b | 10:30 : x|y : z") == [["a", "", "b"],
                                                            ["10:30", "x|y", "z"]]
    assert read_table([["a", None, True, 2.5]], ".") == [["a", "", "true", "2.5"]]


@pytest.mark.parametrize("cell, message", [
    ('[["a", "b"], ["c"', "malformed JSON table: Expecting"),
    ([["a", "b"], ["c"]], "ragged rows: row 2 has 1 cells, row 1 has 2"),
    ({"a": [1, 2], "b": [1]}, "ragged columns: 'a' has 2 values, 'b' has 1"),
    ("missing.csv", "no such table file: .*missing.csv"),
    ("ragged.csv", r"ragged.csv: ragged rows: line 5 has 3 cells, line 1 has 2"),
    (["a", "b"], "expected a table as a list of rows"),
    ([], "expected a table with at least one row"),
    ([[]], "row 1 has no cells"),
    ({}, "row 1 has no cells"),
    ("  ", "expected a table, found an empty cell"),
    (7, "expected a table .* found int"),
])
def test_bad_tables_name_file_line_and_column(tmp_path, cell, message):
    (tmp_path / "ragged.csv").write_text('a,b\n1,2\n\n"3\n",4,5\n')  # line 5: a quoted newline
    good = {"table": ROWS, "text": "the employment"}
    write_jsonl(tmp_path / "train.jsonl", [good, good, {"table": cell, "text": "x"}])
    task = instruction_task(tmp_path, TABLE_TO_TEXT)
    with pytest.raises(DataError, match=message) as info:
        task.load_dataset("train")
    assert (info.value.path, info.value.line, info.value.column) == (
        str(tmp_path / "train.jsonl"), 3, "table")


def test_every_bad_table_is_reported_at_once(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"table": ROWS, "text": "a"}])
    write_jsonl(tmp_path / "valid.jsonl", [{"table": ROWS, "text": "a"},
                                           {"table": "[[1", "text": "b"},
                                           {"table": [[1, 2], [3]], "text": "c"}])
    with pytest.raises(InvalidRows) as info:
        instruction_task(tmp_path, TABLE_TO_TEXT).load_dataset("valid")
    assert [e.line for e in info.value.errors] == [2, 3]


@pytest.fixture
def table_task(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"table": ROWS, "text": "employment grew"}] * 4)
    task = instruction_task(tmp_path, TABLE_TO_TEXT)
    task.prepare()
    return task


def slot_of(instruction):
    return TaskPlan.parse(instruction).templates[0].slots[0]


def read(task, cell, attributes=""):
    slot = slot_of(f"[STRUCT:table{attributes}] -> [TEXT:text]")
    ctx = task.context("STRUCT")
    return get_modality("STRUCT").read(cell, slot, ctx), ctx


def test_tokens_are_cells_between_separator_symbols(table_task):
    table, _ = read(table_task, [["Year", "GNP"], ["1947", "234.3"]], ",uncased")
    d = table_task.dictionary
    cell, row = d.index(CELL_SYMBOL), d.index(ROW_SYMBOL)
    encode = table_task.vocab.encode
    assert table.rows == [["year", "gnp"], ["1947", "234.3"]]
    assert table.tokens == (encode("year") + [cell] + encode("gnp") + [row] + encode("1947")
                            + [cell] + encode("234.3"))


def test_max_length_cuts_whole_rows_keeping_the_header(table_task):
    full, _ = read(table_task, ROWS, ",header")
    header_and_one = len(read(table_task, ROWS[:2], ",header")[0].tokens)
    for limit in (header_and_one, len(full.tokens) - 1):
        table, ctx = read(table_task, ROWS, f",header,max_length={limit}")
        assert len(table.tokens) <= limit
        assert table.rows == ROWS[:len(table.rows)] and len(table.rows) < len(ROWS)
        assert ctx.notes == {"rows cut from tables of [STRUCT:table,header,max_length="
                             f"{limit}] (max_rows / max_length)": len(ROWS) - len(table.rows)}
    tiny, _ = read(table_task, ROWS, ",header,max_length=1")
    assert tiny.rows == ROWS[:1]  # the header stays whole, even past the limit
    assert read(table_task, ROWS, ",max_length=1")[0].rows == ROWS[:1]  # so does a first row
    assert read(table_task, ROWS, ",header,max_rows=2")[0].rows == ROWS[:3]
    assert read(table_task, ROWS, ",max_rows=2")[0].rows == ROWS[:2]


def test_the_dataset_logs_how_many_rows_were_cut(tmp_path, caplog):
    write_jsonl(tmp_path / "train.jsonl", [{"table": ROWS, "text": "employment grew"}] * 5)
    task = instruction_task(tmp_path, TABLE_TO_TEXT.replace("header]", "header,max_rows=1]"))
    with caplog.at_level(logging.INFO):
        task.load_dataset("train")
    assert "train.jsonl: 10 rows cut from tables of [STRUCT:table,header,max_rows=1]" in caplog.text


def test_output_tables_parse_back_into_rows(table_task):
    modality = get_modality("STRUCT")
    slot = TaskPlan.parse("[TEXT:text] -> [STRUCT:grid,rows=2,columns=2]").target
    ctx = table_task.context("STRUCT")
    table = modality.read([["1947", "60323"], ["1948", "61122"]], slot, ctx)
    assert modality.postprocess(table.tokens, slot, ctx, None) == table.rows
    assert modality.reference(table, slot, ctx) == [["1947", "60323"], ["1948", "61122"]]
    with pytest.raises(ValueError, match=r"expected 2 rows of 2 cells .*found 1 rows of 3"):
        modality.read([["1", "2", "3"]], slot, ctx)


def test_shape_constraint_keeps_decoding_to_rows_and_columns():
    cell, row, eos = 10, 11, 2
    shape = ShapeConstraint(rows=2, columns=3, cell_tokens=2, cell=cell, row=row, eos=eos,
                            subwords=range(4, 10))

    def allowed(constraint, generated):
        return allowed_tokens(constraint, generated, 16)

    def allows(generated, token):
        return token in allowed(shape, generated)
    assert allows([5], cell) and not allows([5], row) and not allows([5], eos)
    assert not allows([5, cell, 6, cell, 7], cell) and allows([5, cell, 6, cell, 7], row)
    assert not allows([5, cell, 6, cell, 7], eos)  # one more row to go
    last = [5, cell, 6, cell, 7, row, 5, cell, 6, cell, 7]
    assert allows(last, eos) and not allows(last, row) and not allows(last, cell)
    assert allows(last, 7)  # a cell may hold several tokens, up to cell_tokens
    assert allowed(shape, last + [7]) == [eos] and allowed(shape, [5, 6]) == [cell]
    assert allowed(shape, []) == [4, 5, 6, 7, 8, 9, cell]  # cell text is subword pieces
    free_rows = ShapeConstraint(rows=None, columns=2, cell_tokens=8, cell=cell, row=row, eos=eos,
                                subwords=range(4, 10))
    assert {row, eos} <= set(allowed(free_rows, [5, cell, 6]))
    assert cell not in allowed(free_rows, [5, cell, 6])
    # beam search asks for all hypotheses at once, each at its own length
    hypotheses = [[], [5], [5, 6], [5, cell, 6, cell, 7], last, last + [7], [5, cell, 6, row]]
    for constraint in (shape, free_rows):
        assert allowed_in_one_batch(constraint, hypotheses, 16) == [
            allowed(constraint, h) for h in hypotheses]


def test_cell_accuracy_counts_missing_and_extra_cells_as_wrong():
    reference = [["1", "2"], ["3", "4"]]
    assert cell_accuracy_counts([[["1", "2"], ["3", "4"]]], [reference]) == (4, 4)
    assert cell_accuracy_counts([[["1", "2"]]], [reference]) == (2, 4)
    assert cell_accuracy_counts([[["1", "2", "9"], ["3", "4"], ["5"]]], [reference]) == (4, 6)


def test_generate_prints_tables_as_linearized_text():
    modality = get_modality("STRUCT")
    pieces = f"\u25811 {CELL_SYMBOL} \u25812 {ROW_SYMBOL} \u25813 {CELL_SYMBOL} \u2581big \u2581cat"
    assert modality.format_generated(pieces, {}) == "1 : 2 | 3 : big cat"
    detokenized = f"1{CELL_SYMBOL}2{ROW_SYMBOL}3{CELL_SYMBOL}big cat"  # --post-process
    assert modality.format_generated(detokenized, {}) == "1 : 2 | 3 : big cat"
    assert modality.format_generated("a cat", {}) is None
