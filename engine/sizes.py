"""How big a notebook's content is, for `--notebook-max-bytes` (contract §8), kept cheaply per op.

The size counts what a welcome carries: every cell (tombstones included) as the UTF-8 bytes of
its source plus the JSON bytes of its metadata, attachments and outputs, plus a small fixed
overhead per cell, plus the notebook metadata. `ContentMeter` measures a notebook once and then
only re-measures the cells an op replaced: an unchanged source, metadata dict or output is never
encoded again (cells are immutable values, so identity says "unchanged"), and an ASCII source
is measured in O(1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from engine.ot.model import Cell, Notebook

CELL_OVERHEAD = 96  # the keys, quotes and small fields of one cell in the DOC


def text_size(text: str) -> int:
    """UTF-8 size of `text` (O(1) for ASCII strings)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def json_size(value: Any) -> int:
    """Encoded JSON size of `value` (0 for None or empty containers)."""
    if not value:
        return 0
    try:
        return len(orjson.dumps(value))
    except TypeError:  # lone surrogates: orjson refuses them, json escapes them
        return len(json.dumps(value, ensure_ascii=True))


@dataclass(slots=True)
class _CellSize:
    cell: Cell
    source: str
    source_size: int
    metadata: Any
    metadata_size: int
    attachments: Any
    attachments_size: int
    outputs: list[Any]
    output_sizes: list[int]
    total: int


def _measure_cell(cell: Cell, old: _CellSize | None) -> _CellSize:
    source_size = (
        old.source_size if old is not None and old.source is cell.source else text_size(cell.source)
    )
    metadata_size = (
        old.metadata_size if old is not None and old.metadata is cell.metadata else json_size(cell.metadata)
    )
    attachments_size = (
        old.attachments_size
        if old is not None and old.attachments is cell.attachments
        else json_size(cell.attachments)
    )
    if old is not None and old.outputs is cell.outputs:
        output_sizes = old.output_sizes
    else:
        previous = old.outputs if old is not None else []
        known = old.output_sizes if old is not None else []
        output_sizes = [
            known[i] if i < len(previous) and previous[i] is o else json_size(o)
            for i, o in enumerate(cell.outputs)
        ]
    total = (
        CELL_OVERHEAD
        + len(cell.id)
        + len(cell.pos)
        + source_size
        + metadata_size
        + attachments_size
        + sum(output_sizes)
        + len(output_sizes)
    )
    return _CellSize(
        cell,
        cell.source,
        source_size,
        cell.metadata,
        metadata_size,
        cell.attachments,
        attachments_size,
        cell.outputs,
        output_sizes,
        total,
    )


def notebook_size(notebook: Notebook) -> int:
    """The content size of `notebook` (measured in full)."""
    return ContentMeter(notebook).total


class ContentMeter:
    """The content size of one evolving notebook. `measure` a candidate, then `accept` it."""

    def __init__(self, notebook: Notebook) -> None:
        self._notebook = notebook
        self._cells = {cid: _measure_cell(cell, None) for cid, cell in notebook.cells.items()}
        self._metadata_size = json_size(notebook.metadata)
        self.total = self._metadata_size + sum(c.total for c in self._cells.values())
        self._candidate: tuple[Notebook, dict[str, _CellSize], int, int] | None = None

    def measure(self, candidate: Notebook) -> int:
        """The size of `candidate`, a successor of the current notebook (re-measures only the
        cells that are new objects; scanning identities is O(cells), encoding is not)."""
        base = self._notebook
        changed: dict[str, _CellSize] = {}
        total = self.total
        if candidate.cells is not base.cells:
            for cid, cell in candidate.cells.items():
                old = self._cells.get(cid)
                if old is None or old.cell is not cell:
                    new = _measure_cell(cell, old)
                    changed[cid] = new
                    total += new.total - (old.total if old is not None else 0)
        metadata_size = self._metadata_size
        if candidate.metadata is not base.metadata:
            metadata_size = json_size(candidate.metadata)
            total += metadata_size - self._metadata_size
        self._candidate = (candidate, changed, metadata_size, total)
        return total

    def accept(self, candidate: Notebook) -> None:
        """`candidate` (just measured) is now the current notebook."""
        if self._candidate is None or self._candidate[0] is not candidate:
            self.measure(candidate)
        assert self._candidate is not None
        _, changed, self._metadata_size, self.total = self._candidate
        self._cells.update(changed)
        self._notebook = candidate
        self._candidate = None
