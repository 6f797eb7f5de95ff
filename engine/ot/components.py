"""Notebook operations: applying ops to the model and transforming concurrent ops (contract §5, §8).

An op is a list of components (JSON dicts, validated and normalised by `protocol`) applied
atomically. `apply_op` is pure and copy-on-write; `transform_op` makes two ops made against the
same document apply in either order with the same result (TP1), following the server order.

Component kinds and how they transform against each other (`op_first` says whether the
component being transformed is ordered first in the final server order):

- `text` vs `text` on one cell: code-point OT (`engine.ot.text`); at a tie the insert of the op
  ordered first stays left. Text on a cell is never affected by anything else (it survives a
  concurrent delete, in the tombstone).
- Registers, last writer (in server order) wins: `cell_move` (pos), `cell_type`, `meta_set`
  (cell id + key, or notebook + key when id is null), `cell_delete`/`cell_restore` (one
  `deleted` register), `exec_count`, `exec_state`. A component ordered first is dropped when
  the other op writes the same register; one ordered later is kept.
- `outputs_append`/`stream_append` ordered first are dropped against an `outputs_clear` of the
  same cell ordered later (the clear wins); an `outputs_clear` is never changed.
- `cell_insert` never conflicts (an op inserting an id that exists is rejected by `apply_op`);
  components on different cells or keys commute.

Server components (`outputs_append`, `stream_append`, `display_update`, `exec_count`,
`exec_state`) are generated at the head, so they are only ever ordered *first* relative to the
client components they are transformed against (a client transforming an incoming server op
past its pending op). TP1 is guaranteed for them in that orientation only: an `outputs_append`
ordered *after* a concurrent `outputs_clear` cannot be expressed so that both orders agree.
Two server components are never transformed against each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.ot.errors import OpError
from engine.ot.model import Cell, JSONDict, Notebook
from engine.ot.poskeys import is_valid_key
from engine.ot.text import apply_text, has_surrogate, transform_text
from protocol.components import CELL_TYPES, EXEC_STATES, SERVER_COMPONENTS, USER_COMPONENTS

Component = dict[str, Any]
Op = list[Component]

# The component vocabulary is the protocol's; the OT core only gives the sets its own names.
USER_KINDS = USER_COMPONENTS
SERVER_KINDS = SERVER_COMPONENTS

# Component kind -> the register it writes (last writer wins).
_REGISTERS: dict[str, str] = {
    "cell_move": "pos",
    "cell_delete": "deleted",
    "cell_restore": "deleted",
    "cell_type": "cell_type",
    "meta_set": "meta",
    "exec_count": "exec_count",
    "exec_state": "exec_state",
}
_OUTPUT_WRITERS = frozenset({"outputs_append", "stream_append"})

__all__ = [
    "CELL_TYPES",
    "EXEC_STATES",
    "SERVER_KINDS",
    "USER_KINDS",
    "Component",
    "Op",
    "OpError",
    "apply_op",
    "is_server_component",
    "referenced_cells",
    "transform_component",
    "transform_op",
]


def is_server_component(component: Component) -> bool:
    """True for the kinds only the server (kernel bridge) may write."""
    return component.get("t") in SERVER_KINDS


# ----------------------------------------------------------------------------------------- apply


class _Apply:
    """Copy-on-write state of one `apply_op`: copies the cells dict, the notebook metadata and the
    displays index only when first written; every touched cell is replaced by a new `Cell`."""

    __slots__ = ("base", "cells", "displays", "metadata", "version")

    def __init__(self, base: Notebook, version: int) -> None:
        self.base = base
        self.version = version
        self.cells: dict[str, Cell] | None = None
        self.metadata: JSONDict | None = None
        self.displays: dict[str, frozenset[str]] | None = None

    def has(self, cid: str) -> bool:
        return cid in (self.cells if self.cells is not None else self.base.cells)

    def get(self, cid: Any) -> Cell:
        if not isinstance(cid, str):
            raise OpError("invalid_op", f"cell id must be a string, got {cid!r}")
        cell = (self.cells if self.cells is not None else self.base.cells).get(cid)
        if cell is None:
            raise OpError("unknown_cell", f"no cell with id {cid!r}")
        return cell

    def put(self, cell: Cell) -> None:
        if self.cells is None:
            self.cells = dict(self.base.cells)
        self.cells[cell.id] = cell

    def display_index(self) -> dict[str, frozenset[str]]:
        if self.displays is None:
            self.displays = dict(self.base.displays)
        return self.displays

    def result(self) -> Notebook:
        b = self.base
        return Notebook(
            metadata=self.metadata if self.metadata is not None else b.metadata,
            cells=self.cells if self.cells is not None else b.cells,
            displays=self.displays if self.displays is not None else b.displays,
            nbformat=b.nbformat,
            nbformat_minor=b.nbformat_minor,
        )


def _str(c: Component, key: str) -> str:
    v = c.get(key)
    if not isinstance(v, str):
        raise OpError("invalid_op", f"{c.get('t')}: {key!r} must be a string")
    if not v.isascii() and has_surrogate(v):
        raise OpError("invalid_op", f"{c.get('t')}: {key!r} must not contain lone surrogates")
    return v


def _pos(c: Component) -> str:
    pos = c.get("pos")
    if not is_valid_key(pos):
        raise OpError("invalid_pos", f"{c.get('t')}: pos must be 1-1024 characters of [0-9A-Za-z]")
    assert isinstance(pos, str)
    return pos


def _dict(v: Any, what: str) -> JSONDict:
    if not isinstance(v, dict):
        raise OpError("invalid_op", f"{what} must be an object")
    return v


def _cell_insert(tx: _Apply, c: Component) -> None:
    cid = _str(c, "id")
    if tx.has(cid):
        raise OpError("cell_exists", f"a cell with id {cid!r} already exists (possibly deleted)")
    spec = _dict(c.get("cell"), "cell_insert: cell")
    cell_type = spec.get("cell_type")
    if cell_type not in CELL_TYPES:
        raise OpError("invalid_op", f"cell_insert: unknown cell_type {cell_type!r}")
    attachments = spec.get("attachments")
    tx.put(
        Cell(
            id=cid,
            pos=_pos(c),
            cell_type=cell_type,
            source=_str(spec, "source") if "source" in spec else "",
            metadata=dict(_dict(spec.get("metadata") or {}, "cell_insert: metadata")),
            attachments=None if attachments is None else dict(_dict(attachments, "attachments")),
            created=tx.version,
        )
    )


def _set_deleted(tx: _Apply, c: Component, deleted: bool) -> None:
    cell = tx.get(c.get("id"))
    if cell.deleted != deleted:
        tx.put(replace(cell, deleted=deleted))


def _cell_move(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    pos = _pos(c)
    if cell.pos != pos:
        tx.put(replace(cell, pos=pos))


def _text(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    ops = c.get("ops")
    if not isinstance(ops, list):
        raise OpError("invalid_op", "text: ops must be a list")
    source = apply_text(cell.source, ops)
    if source != cell.source:
        tx.put(replace(cell, source=source))


def _cell_type(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    value = c.get("value")
    if value not in CELL_TYPES:
        raise OpError("invalid_op", f"cell_type: unknown value {value!r}")
    if cell.cell_type != value:
        tx.put(replace(cell, cell_type=value))


def _meta_set(tx: _Apply, c: Component) -> None:
    key = _str(c, "key")
    value = c.get("value")
    cid = c.get("id")
    if cid is None:
        meta = dict(tx.metadata if tx.metadata is not None else tx.base.metadata)
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
        tx.metadata = meta
        return
    cell = tx.get(cid)
    cmeta = dict(cell.metadata)
    if value is None:
        cmeta.pop(key, None)
    else:
        cmeta[key] = value
    tx.put(replace(cell, metadata=cmeta))


def _drop_displays(tx: _Apply, cell: Cell) -> None:
    dids = {d for d in cell.display_ids if d is not None}
    if not dids:
        return
    index = tx.display_index()
    for did in dids:
        rest = index.get(did, frozenset()) - {cell.id}
        if rest:
            index[did] = rest
        else:
            index.pop(did, None)


def _outputs_clear(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    if cell.outputs or cell.display_ids:
        _drop_displays(tx, cell)
        tx.put(replace(cell, outputs=[], display_ids=[]))


def _outputs_append(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    output = _dict(c.get("output"), "outputs_append: output")
    did = c.get("display_id")
    if did is not None:
        if not isinstance(did, str):
            raise OpError("invalid_op", "outputs_append: display_id must be a string or null")
        index = tx.display_index()
        index[did] = index.get(did, frozenset()) | {cell.id}
    tx.put(replace(cell, outputs=[*cell.outputs, output], display_ids=[*cell.display_ids, did]))


def _stream_text(text: Any) -> str:
    if isinstance(text, list):
        return "".join(str(t) for t in text)
    return str(text)


def _stream_append(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    name = _str(c, "name")
    text = _str(c, "text")
    last = cell.outputs[-1] if cell.outputs else None
    if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
        merged = {**last, "text": _stream_text(last.get("text", "")) + text}
        tx.put(replace(cell, outputs=[*cell.outputs[:-1], merged]))
    else:
        new = {"output_type": "stream", "name": name, "text": text}
        tx.put(replace(cell, outputs=[*cell.outputs, new], display_ids=[*cell.display_ids, None]))


def _display_update(tx: _Apply, c: Component) -> None:
    did = _str(c, "display_id")
    output = _dict(c.get("output"), "display_update: output")
    data = output.get("data", {})
    metadata = output.get("metadata", {})
    index = tx.displays if tx.displays is not None else tx.base.displays
    for cid in sorted(index.get(did, ())):
        cell = tx.get(cid)
        outputs = [
            {**o, "data": data, "metadata": metadata} if d == did else o
            for o, d in zip(cell.outputs, cell.display_ids, strict=True)
        ]
        tx.put(replace(cell, outputs=outputs))


def _exec_count(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    n = c.get("n")
    if n is not None and (type(n) is not int or n < 0):
        raise OpError("invalid_op", "exec_count: n must be a non-negative integer or null")
    if cell.execution_count != n:
        tx.put(replace(cell, execution_count=n))


def _exec_state(tx: _Apply, c: Component) -> None:
    cell = tx.get(c.get("id"))
    state = c.get("state")
    if state is not None and state not in EXEC_STATES:
        raise OpError("invalid_op", f"exec_state: unknown state {state!r}")
    if cell.exec_state != state:
        tx.put(replace(cell, exec_state=state))


_APPLY: dict[str, Callable[[_Apply, Component], None]] = {
    "cell_insert": _cell_insert,
    "cell_delete": lambda tx, c: _set_deleted(tx, c, True),
    "cell_restore": lambda tx, c: _set_deleted(tx, c, False),
    "cell_move": _cell_move,
    "text": _text,
    "cell_type": _cell_type,
    "meta_set": _meta_set,
    "outputs_clear": _outputs_clear,
    "outputs_append": _outputs_append,
    "stream_append": _stream_append,
    "display_update": _display_update,
    "exec_count": _exec_count,
    "exec_state": _exec_state,
}


def apply_op(nb: Notebook, op: Op, version: int) -> Notebook:
    """Apply every component of `op` in order and return the new `Notebook`.

    Never mutates `nb` or anything reachable from it: the result shares every untouched cell,
    list and dict with `nb` (copy-on-write). Atomic: if any component fails, `OpError` is raised
    and nothing observable has changed. `version` is the version this op gets; a `cell_insert`
    stamps it as the new cell's `created`. Raises `OpError` with code `unknown_cell` (a
    component names a missing cell), `cell_exists` (insert of an existing id, tombstones
    included), `text_out_of_range`, `invalid_pos` or `invalid_op` (malformed component). An
    empty op or a no-op component (deleting a deleted cell, moving a tombstone) is valid.
    """
    if not isinstance(op, list):
        raise OpError("invalid_op", "an op must be a list of components")
    tx = _Apply(nb, version)
    for component in op:
        if not isinstance(component, dict):
            raise OpError("invalid_op", "a component must be an object")
        handler = _APPLY.get(component.get("t"))  # type: ignore[arg-type]
        if handler is None:
            raise OpError("invalid_op", f"unknown component type {component.get('t')!r}")
        try:
            handler(tx, component)
        except OpError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise OpError("invalid_op", f"malformed {component.get('t')} component: {exc}") from exc
    return tx.result()


# ------------------------------------------------------------------------------------- transform


def _same_register(c: Component, o: Component, reg: str) -> bool:
    if _REGISTERS.get(o["t"]) != reg or c.get("id") != o.get("id"):
        return False
    return reg != "meta" or c.get("key") == o.get("key")


def transform_component(c: Component, other: Component, *, op_first: bool) -> Component | None:
    """Transform one component past one concurrent component; `None` means it is dropped.

    See the module docstring for the rules. Never mutates its arguments.
    """
    t = c["t"]
    if t == "text":
        if other["t"] == "text" and other["id"] == c["id"]:
            ops = transform_text(c["ops"], other["ops"], op_first=op_first)
            return {**c, "ops": ops} if ops else None
        return c
    if not op_first:
        return c
    reg = _REGISTERS.get(t)
    if reg is not None:
        return None if _same_register(c, other, reg) else c
    if t in _OUTPUT_WRITERS and other["t"] == "outputs_clear" and other["id"] == c["id"]:
        return None
    return c


def transform_op(op: Op, other: Op, *, op_first: bool) -> Op:
    """Transform `op` past `other` (both made against the same document); apply the result after
    `other`.

    TP1: `apply(apply(d, other), transform_op(op, other, op_first=f)) ==
    apply(apply(d, op), transform_op(other, op, op_first=not f))`. `op_first=False` is the
    server's case (`other` was committed first, `op` arrives later); a client transforming an
    incoming server op past its own pending op passes `op_first=True`. Multi-component ops are
    transformed pairwise (each component of `op` past each component of `other`, with `other`'s
    components carried past `op`'s earlier ones), never composed. Dropped components disappear,
    so the result may be `[]` (still a valid op). For server components TP1 holds only when they
    are ordered first (see the module docstring). Inputs are not mutated.
    """
    if not op or not other:
        return list(op)
    rest: Op = list(other)
    out: Op = []
    for a in op:
        cur: Component | None = a
        carried: Op = []
        for b in rest:
            if cur is None:
                carried.append(b)
                continue
            b2 = transform_component(b, cur, op_first=not op_first)
            cur = transform_component(cur, b, op_first=op_first)
            if b2 is not None:
                carried.append(b2)
        rest = carried
        if cur is not None:
            out.append(cur)
    return out


def referenced_cells(op: Op) -> set[str]:
    """Ids of the pre-existing cells `op` refers to (not the ones it inserts itself).

    `display_update` and notebook-level `meta_set` refer to no particular cell.
    """
    inserted: set[str] = set()
    refs: set[str] = set()
    for c in op:
        cid = c.get("id")
        if not isinstance(cid, str):
            continue
        if c.get("t") == "cell_insert":
            inserted.add(cid)
        elif cid not in inserted:
            refs.add(cid)
    return refs
