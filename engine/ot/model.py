"""The in-memory notebook model that the OT core applies operations to.

Both classes are treated as immutable values: `engine.ot.components.apply_op` never mutates
its input, it returns a new `Notebook` that shares every untouched `Cell` with the old one.
That makes a document at any version safe to hand to a background snapshot writer or to a
welcome encoder while the room keeps committing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]


@dataclass(slots=True)
class Cell:
    """One cell, live or tombstoned. `source` is always one string (code points)."""

    id: str
    pos: str
    cell_type: str  # "code" | "markdown" | "raw"
    source: str = ""
    metadata: JSONDict = field(default_factory=dict)
    attachments: JSONDict | None = None
    outputs: list[JSONDict] = field(default_factory=list)
    # display_ids[i] is the display_id output i was created with (or None); parallel to outputs.
    display_ids: list[str | None] = field(default_factory=list)
    execution_count: int | None = None
    exec_state: str | None = None  # "queued" | "running" | "done" | "error" | "aborted" | None
    deleted: bool = False
    created: int = 0  # the version whose op inserted this cell (0: part of the initial content)


@dataclass(slots=True)
class Notebook:
    """A notebook: top-level metadata plus every cell (tombstones included) keyed by id."""

    metadata: JSONDict = field(default_factory=dict)
    cells: dict[str, Cell] = field(default_factory=dict)
    # display_id -> ids of the cells holding at least one output created with that display_id.
    displays: dict[str, frozenset[str]] = field(default_factory=dict)
    nbformat: int = 4
    nbformat_minor: int = 5


def sort_key(cell: Cell) -> tuple[bytes, bytes]:
    """The visible-order key: `(pos, id)`, both compared bytewise (contract §5)."""
    return (cell.pos.encode(), cell.id.encode())


def ordered_cells(nb: Notebook, *, include_deleted: bool = False) -> list[Cell]:
    """Cells in visible order; tombstones only when `include_deleted`."""
    cells = nb.cells.values() if include_deleted else (c for c in nb.cells.values() if not c.deleted)
    return sorted(cells, key=sort_key)
