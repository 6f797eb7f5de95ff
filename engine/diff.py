"""Turn "make the notebook look like this" into one ordinary op (HTTP replace and revert).

The result is a list of components that, applied at head, makes head's visible cells equal the
target's visible cells: same ids, order, types, sources, metadata, outputs and execution counts,
and the same notebook metadata. Connected clients receive it like any other op, so their
cursors and pending edits survive: sources change by a minimal prefix/suffix splice, cells keep
their position keys when their relative order already matches.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from engine.errors import Invalid
from engine.ot.model import Cell, Notebook, ordered_cells
from engine.ot.poskeys import key_between, keys_between
from engine.records import Component


def text_splice(old: str, new: str) -> list[Any]:
    """A splice turning `old` into `new`: keep the common prefix and suffix, replace the middle."""
    if old == new:
        return []
    prefix = 0
    limit = min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
        suffix += 1
    ops: list[Any] = []
    if prefix:
        ops.append(prefix)
    removed = len(old) - prefix - suffix
    if removed:
        ops.append({"d": removed})
    inserted = new[prefix : len(new) - suffix]
    if inserted:
        ops.append(inserted)
    return ops


def _positions(head: Notebook, order: list[Cell]) -> dict[str, str]:
    """Position keys for the target order, reusing head's keys wherever the order allows."""
    kept = [head.cells[c.id].pos if c.id in head.cells else None for c in order]
    known = [p for p in kept if p is not None]
    if all(a < b for a, b in pairwise(known)):
        try:
            return _fill_positions(order, kept)
        except ValueError:
            pass  # two kept neighbours leave no room between them (client-chosen keys)
    return {c.id: p for c, p in zip(order, keys_between(None, None, len(order)), strict=True)}


def _fill_positions(order: list[Cell], kept: list[str | None]) -> dict[str, str]:
    """Keep every existing key, give new cells keys between their kept neighbours."""
    result: dict[str, str] = {}
    prev: str | None = None
    for i, cell in enumerate(order):
        pos = kept[i]
        if pos is None:
            nxt = next((p for p in kept[i + 1 :] if p is not None), None)
            pos = key_between(prev, nxt)
        result[cell.id] = pos
        prev = pos
    return result


def _metadata_changes(cell_id: str | None, old: dict[str, Any], new: dict[str, Any]) -> list[Component]:
    changes: list[Component] = []
    for key in sorted(old.keys() - new.keys()):
        changes.append({"t": "meta_set", "id": cell_id, "key": key, "value": None})
    for key in sorted(new):
        if key not in old or old[key] != new[key]:
            changes.append({"t": "meta_set", "id": cell_id, "key": key, "value": new[key]})
    return changes


def _output_changes(old: Cell | None, new: Cell) -> list[Component]:
    changes: list[Component] = []
    old_outputs = old.outputs if old is not None else []
    if old_outputs != new.outputs:
        if old_outputs:
            changes.append({"t": "outputs_clear", "id": new.id})
        changes.extend({"t": "outputs_append", "id": new.id, "output": o} for o in new.outputs)
    old_count = old.execution_count if old is not None else None
    if old_count != new.execution_count:
        changes.append({"t": "exec_count", "id": new.id, "n": new.execution_count})
    return changes


def diff_notebooks(head: Notebook, target: Notebook) -> list[Component]:
    """Components that make `head`'s visible content equal `target`'s (see module docstring).

    Raises `Invalid` when the target gives an existing cell id different attachments: no
    component can change attachments, so such a cell needs a new id.
    """
    order = ordered_cells(target)
    positions = _positions(head, order)
    op: list[Component] = []
    target_ids = {c.id for c in order}
    for cell in ordered_cells(head):
        if cell.id not in target_ids:
            op.append({"t": "cell_delete", "id": cell.id})
    for cell in order:
        old = head.cells.get(cell.id)
        if old is None:
            body: dict[str, Any] = {
                "cell_type": cell.cell_type,
                "source": cell.source,
                "metadata": cell.metadata,
            }
            if cell.attachments is not None:
                body["attachments"] = cell.attachments
            op.append({"t": "cell_insert", "id": cell.id, "pos": positions[cell.id], "cell": body})
            op.extend(_output_changes(None, cell))
            continue
        if (old.attachments or None) != (cell.attachments or None):
            raise Invalid(
                f"cell {cell.id!r} already exists with other attachments; give the changed cell a new id",
                code="attachments_immutable",
            )
        if old.deleted:
            op.append({"t": "cell_restore", "id": cell.id})
        if old.pos != positions[cell.id]:
            op.append({"t": "cell_move", "id": cell.id, "pos": positions[cell.id]})
        if old.cell_type != cell.cell_type:
            op.append({"t": "cell_type", "id": cell.id, "value": cell.cell_type})
        splice = text_splice(old.source, cell.source)
        if splice:
            op.append({"t": "text", "id": cell.id, "ops": splice})
        op.extend(_metadata_changes(cell.id, old.metadata, cell.metadata))
        op.extend(_output_changes(old, cell))
    op.extend(_metadata_changes(None, head.metadata, target.metadata))
    return op
