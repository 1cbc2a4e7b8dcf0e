"""STRUCT: a table in, or a table out (the original's Sudoku).

Cells are sentencepiece tokens of the shared vocabulary; two reserved symbols separate
them: ``<table_cell>`` between the cells of a row and ``<table_row>`` between rows, so a
cell holding ``:`` or ``|`` cannot fake a boundary and decoding can be held to a shape.
As text (vocabulary training, fairseq-generate's lines, ``OFASys`` outputs joined by the
user) a table reads as the original system writes it: ``a : b | c : d``.

Input slots cut long tables at row boundaries (``max_rows``, ``max_length`` in tokens;
the first row, a ``header`` table's header, is always kept whole), and the dataset logs
how many rows were cut. A target slot may state its shape (``rows=``, ``columns=``): beam search then
emits exactly that many rows of that many cells, each at most ``cell_tokens`` long (8 by
default), and the output is a list of rows.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch

from ...instruction import AttrSpec, Slot
from ...scoring.validation_metrics import register_metric
from ..base import DECODER, ENCODER, Context, Corpus, Modality, TokenConstraint
from ..text import UNCASED, is_target
from .accuracy import cell_accuracy_counts
from .table import Rows, linearize, read_table

CELL_SYMBOL, ROW_SYMBOL = "<table_cell>", "<table_row>"
DEFAULT_CELL_TOKENS = 8

register_metric("cell_accuracy", "_cell_correct", "_cell_total")


class Table(NamedTuple):
    rows: Rows  # the cells kept, normalized as the slot asks
    tokens: List[int]  # cells' tokens with the separator symbols between them


class ShapeConstraint(TokenConstraint):
    """Exactly ``rows`` rows of ``columns`` cells (either may be None: any number), each
    cell at most ``cell_tokens`` tokens long (so that every output ends).

    Args:
        rows: rows of the output table, or None.
        columns: cells of each row, or None.
        cell_tokens: the longest cell, in tokens.
        cell, row, eos: the separator symbols' and end of sentence's ids.
        subwords: the ids a cell's text is made of (the sentencepiece pieces).
    """

    def __init__(self, rows: Optional[int], columns: Optional[int], cell_tokens: int,
                 cell: int, row: int, eos: int, subwords: range):
        self.rows, self.columns, self.cell_tokens = rows, columns, cell_tokens
        self.cell, self.row, self.eos = cell, row, eos
        self.subwords = subwords

    def allowed_mask(self, generated, lengths, vocab_size):
        positions = torch.arange(generated.size(1), device=generated.device)
        real = positions < lengths.unsqueeze(1)
        is_row = (generated == self.row) & real
        is_end = (is_row | (generated == self.cell)) & real
        rows_done = is_row.sum(1)
        # position after the last row separator / the last separator of either kind
        row_start = torch.where(is_row, positions + 1, 0).amax(1)
        cell_start = torch.where(is_end, positions + 1, 0).amax(1)
        cells_done = (is_end & ~is_row & (positions >= row_start.unsqueeze(1))).sum(1)
        row_may_end = torch.ones_like(real[:, 0])
        cell_banned = torch.zeros_like(row_may_end)
        if self.columns is not None:
            row_may_end = cells_done == self.columns - 1
            cell_banned = cells_done >= self.columns - 1
        row_banned, eos_banned = ~row_may_end, ~row_may_end
        if self.rows is not None:
            row_banned = row_banned | (rows_done >= self.rows - 1)
            eos_banned = eos_banned | (rows_done != self.rows - 1)
        full = (lengths - cell_start) >= self.cell_tokens  # only a boundary may come next
        ids = torch.arange(vocab_size, device=generated.device)
        subword = (ids >= self.subwords.start) & (ids < self.subwords.stop)
        mask = subword & ~full.unsqueeze(1)
        mask[:, self.cell] = ~cell_banned
        mask[:, self.row] = ~row_banned
        mask[:, self.eos] = ~eos_banned
        return mask


class StructModality(Modality):
    name = "STRUCT"
    attributes = {
        "header": AttrSpec("flag", "the table's first row is its header (kept when rows are cut)"),
        "uncased": UNCASED,
        "max_rows": AttrSpec("int", "keep at most this many rows after the header", min=1,
                             sides=(ENCODER,)),
        "max_length": AttrSpec("int", "keep at most this many tokens, cutting whole rows",
                               min=1, sides=(ENCODER,)),
        "rows": AttrSpec("int", "rows of the output table (decoding keeps to it)", min=1,
                         sides=(DECODER,)),
        "columns": AttrSpec("int", "cells of each output row (decoding keeps to it)", min=1,
                            sides=(DECODER,)),
        "cell_tokens": AttrSpec("int", f"longest output cell in tokens, where rows= or "
                                f"columns= is given (default {DEFAULT_CELL_TOKENS})", min=1,
                                sides=(DECODER,)),
    }
    choices = {"preprocess": ("table",), "adaptor": ("text",)}
    trains_vocabulary = True

    def reserved_symbols(self, cfg) -> List[str]:
        return [CELL_SYMBOL, ROW_SYMBOL]

    # -- cells -------------------------------------------------------------------------
    def vocabulary_texts(self, cell, slot: Slot, base_dir: str = ".") -> Sequence[str]:
        return [" ".join(row) for row in self._rows(cell, slot, base_dir)]

    def read(self, cell, slot: Slot, ctx: Context, decode: bool = True) -> Table:
        rows = self._rows(cell, slot, ctx.base_dir)
        if is_target(slot):
            self._check_shape(rows, slot)
        head = 1 if slot.has("header") else 0
        kept = rows[:head + slot.get("max_rows")] if slot.get("max_rows") else rows
        cell, row = _symbols(ctx)
        row_tokens = [_row_tokens(r, ctx, cell) for r in kept]  # each row encoded once
        if slot.get("max_length"):
            # whole rows only; the first row (the header, or else the first data row) stays
            length = len(row_tokens[0])
            for count, tokens in enumerate(row_tokens[1:], start=1):
                length += 1 + len(tokens)  # the row separator, the row
                if length > slot.get("max_length"):
                    kept, row_tokens = kept[:count], row_tokens[:count]
                    break
        tokens = row_tokens[0] + [t for later in row_tokens[1:] for t in (row, *later)]
        if len(kept) < len(rows):
            ctx.notes[f"rows cut from tables of {slot} (max_rows / max_length)"] += (
                len(rows) - len(kept))
        return Table(kept, tokens)

    def _rows(self, cell, slot: Slot, base_dir: str) -> Rows:
        rows = read_table(cell, base_dir)
        if not rows:
            raise ValueError(f"expected a table with at least one row for {slot}")
        if slot.has("uncased"):
            rows = [[c.lower() for c in row] for row in rows]
        return rows

    @staticmethod
    def _check_shape(rows: Rows, slot: Slot) -> None:
        want_rows, want_columns = slot.get("rows"), slot.get("columns")
        if ((want_rows and len(rows) != want_rows)
                or (want_columns and len(rows[0]) != want_columns)):
            shape = f"{want_rows or 'any number of'} rows of {want_columns or 'any number of'}"
            raise ValueError(f"expected {shape} cells ({slot}), found {len(rows)} rows of "
                             f"{len(rows[0])}")

    # -- tokens --------------------------------------------------------------------------
    def num_tokens(self, table: Table, slot: Slot, ctx: Context) -> int:
        return len(table.tokens)

    def tokens(self, table: Table, slot: Slot, ctx: Context,
               rng: Optional[np.random.Generator]) -> List[int]:
        return table.tokens

    # -- output --------------------------------------------------------------------------
    def reference(self, table: Table, slot: Slot, ctx: Context) -> Rows:
        return self.postprocess(table.tokens, slot, ctx, None)

    def constraint(self, slot: Slot, ctx: Context) -> Optional[TokenConstraint]:
        if not (slot.get("rows") or slot.get("columns")):
            return None
        cell, row = _symbols(ctx)
        return ShapeConstraint(slot.get("rows"), slot.get("columns"),
                               slot.get("cell_tokens", DEFAULT_CELL_TOKENS), cell, row,
                               ctx.vocab.dictionary.eos(), ctx.vocab.subword_ids)

    def postprocess(self, tokens: Sequence[int], slot: Slot, ctx: Context,
                    output_context) -> Rows:
        """The rows of cell texts."""
        cell, row = _symbols(ctx)
        rows: Rows = [[]]
        current: List[int] = []
        for token in list(tokens) + [row]:
            if token in (cell, row):
                rows[-1].append(ctx.vocab.decode(current))
                current = []
                if token == row:
                    rows.append([])
            else:
                current.append(token)
        return rows[:-1]

    def metrics(self, slot: Slot, template) -> List[str]:
        return ["cell_accuracy", "exact_match"]

    def metric_stats(self, predictions: Sequence[Rows], references: Sequence[Rows],
                     slot: Slot, metrics: Sequence[str], corpus: Corpus) -> Dict[str, float]:
        stats: Dict[str, float] = {}
        if "cell_accuracy" in metrics:
            correct, total = cell_accuracy_counts(predictions, references)
            stats.update(_cell_correct=correct, _cell_total=total)
        if "exact_match" in metrics:
            stats.update(_exact_match_sum=sum(p == r for p, r in zip(predictions, references)),
                         _exact_match_count=len(references))
        return stats

    def format_generated(self, text: str, settings) -> Optional[str]:
        """Tokens with separator symbols print as ``a : b | c : d``."""
        if CELL_SYMBOL not in text and ROW_SYMBOL not in text:
            return None
        rows = [[_detokenized(c) for c in row.split(CELL_SYMBOL)]
                for row in text.split(ROW_SYMBOL)]
        return linearize(rows)


def _symbols(ctx: Context):
    dictionary = ctx.vocab.dictionary
    return dictionary.index(CELL_SYMBOL), dictionary.index(ROW_SYMBOL)


def _row_tokens(cells: Sequence[str], ctx: Context, cell: int) -> List[int]:
    """A row's cells' tokens with the cell separator between them."""
    tokens: List[int] = []
    for c, text in enumerate(cells):
        if c:
            tokens.append(cell)
        tokens += ctx.vocab.encode(text)
    return tokens


def _detokenized(pieces: str) -> str:
    """A cell of fairseq-generate's text: sentencepiece pieces, or text already
    detokenized by ``--post-process sentencepiece``."""
    if "\u2581" in pieces:
        pieces = pieces.replace(" ", "").replace("\u2581", " ")
    return " ".join(pieces.split())
