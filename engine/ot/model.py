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


def build_displays(cells: dict[str, Cell]) -> dict[str, frozenset[str]]:
    """The `Notebook.displays` index computed from the cells' `display_ids`."""
    index: dict[str, set[str]] = {}
    for cell in cells.values():
        for did in cell.display_ids:
            if did is not None:
                index.setdefault(did, set()).add(cell.id)
    return {did: frozenset(ids) for did, ids in index.items()}


def _cell_to_doc(cell: Cell) -> JSONDict:
    out: JSONDict = {
        "id": cell.id,
        "pos": cell.pos,
        "cell_type": cell.cell_type,
        "source": cell.source,
        "metadata": cell.metadata,
    }
    if cell.attachments is not None:
        out["attachments"] = cell.attachments
    if cell.cell_type == "code":
        out["outputs"] = cell.outputs
        out["execution_count"] = cell.execution_count
    if any(d is not None for d in cell.display_ids):
        out["display_ids"] = cell.display_ids
    if cell.exec_state is not None:
        out["exec_state"] = cell.exec_state
    if cell.deleted:
        out["deleted"] = True
    return out


def notebook_to_doc(nb: Notebook) -> JSONDict:
    """The welcome `DOC` of contract §4: every cell, tombstones included, sorted by `(pos, id)`.

    A CELL is `{"id","pos","cell_type","source","metadata"}` plus `"attachments"` when not
    None, `"outputs"` and `"execution_count"` for code cells, `"display_ids"` (parallel to the
    outputs) when any is non-null — an extension so that clients apply `display_update`
    exactly as the server does —, `"exec_state"` when set and `"deleted": true` for tombstones.
    Outputs of a cell that is not of type code are kept in the model but not sent. The result
    shares dicts and lists with `nb`: treat it as read-only (encode it, don't edit it).
    """
    return {
        "metadata": nb.metadata,
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": [_cell_to_doc(c) for c in ordered_cells(nb, include_deleted=True)],
    }


def notebook_from_doc(doc: JSONDict) -> Notebook:
    """The inverse of `notebook_to_doc` (what a client builds from a welcome).

    `created` is 0 for every cell (the DOC does not carry it) and the `displays` index is
    rebuilt. Missing optional fields take the model's defaults; `display_ids` defaults to all
    None, one per output.
    """
    cells: dict[str, Cell] = {}
    for c in doc.get("cells", []):
        outputs = list(c.get("outputs") or [])
        display_ids = list(c.get("display_ids") or [None] * len(outputs))
        cell = Cell(
            id=c["id"],
            pos=c["pos"],
            cell_type=c["cell_type"],
            source=c.get("source", ""),
            metadata=dict(c.get("metadata") or {}),
            attachments=c.get("attachments"),
            outputs=outputs,
            display_ids=display_ids,
            execution_count=c.get("execution_count"),
            exec_state=c.get("exec_state"),
            deleted=bool(c.get("deleted", False)),
        )
        cells[cell.id] = cell
    return Notebook(
        metadata=dict(doc.get("metadata") or {}),
        cells=cells,
        displays=build_displays(cells),
        nbformat=doc.get("nbformat", 4),
        nbformat_minor=doc.get("nbformat_minor", 5),
    )


STATE_FORMAT = "agora-notebook-state/1"


def notebook_to_state(nb: Notebook) -> JSONDict:
    """The full, lossless JSON form of `nb` for snapshots on disk.

    Every field of every cell (tombstones, `created`, `display_ids`, `exec_state`, outputs of
    non-code cells) in `(pos, id)` order; `displays` is derived, so it is not stored.
    `notebook_from_state(notebook_to_state(nb)) == nb`. Shares dicts with `nb` (read-only).
    """
    return {
        "format": STATE_FORMAT,
        "metadata": nb.metadata,
        "nbformat": nb.nbformat,
        "nbformat_minor": nb.nbformat_minor,
        "cells": [
            {
                "id": c.id,
                "pos": c.pos,
                "cell_type": c.cell_type,
                "source": c.source,
                "metadata": c.metadata,
                "attachments": c.attachments,
                "outputs": c.outputs,
                "display_ids": c.display_ids,
                "execution_count": c.execution_count,
                "exec_state": c.exec_state,
                "deleted": c.deleted,
                "created": c.created,
            }
            for c in ordered_cells(nb, include_deleted=True)
        ],
    }


def notebook_from_state(d: JSONDict) -> Notebook:
    """Rebuild a `Notebook` from `notebook_to_state` output (and rebuild `displays`).

    Raises `ValueError` if `d` is not in the state format.
    """
    if d.get("format") != STATE_FORMAT:
        raise ValueError(f"not a notebook state (format {d.get('format')!r})")
    cells: dict[str, Cell] = {}
    for c in d["cells"]:
        cells[c["id"]] = Cell(
            id=c["id"],
            pos=c["pos"],
            cell_type=c["cell_type"],
            source=c["source"],
            metadata=dict(c["metadata"]),
            attachments=c["attachments"],
            outputs=list(c["outputs"]),
            display_ids=list(c["display_ids"]),
            execution_count=c["execution_count"],
            exec_state=c["exec_state"],
            deleted=c["deleted"],
            created=c["created"],
        )
    return Notebook(
        metadata=dict(d["metadata"]),
        cells=cells,
        displays=build_displays(cells),
        nbformat=d["nbformat"],
        nbformat_minor=d["nbformat_minor"],
    )
