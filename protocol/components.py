"""Validation and normalisation of ops and presence cursors (contract §5 and §8).

An op is a non-empty list of components. `validate_op` checks every component against its
schema and returns fresh dicts holding exactly the known keys in a fixed order, with text
splices normalised, so that encoding the result is canonical and idempotent:
``validate_op(validate_op(x)) == validate_op(x)``.

What is checked here is everything that can be checked without the document: shapes, types,
id and pos syntax, counts, lone surrogates, sizes. Whether a cell exists, or a splice runs past
the end of its source, is for the OT core.

Values are expected as JSON decoders produce them: exact ``dict``, ``list``, ``str``, ``int``,
``float``, ``bool`` and ``None``; a bool is never accepted where an int is due.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from protocol.errors import CLOSE_PROTOCOL_ERROR, ProtocolError
from protocol.limits import DEFAULT_LIMITS, MAX_SAFE_INT, Limits

__all__ = [
    "CELL_TYPES",
    "EXEC_STATES",
    "SERVER_COMPONENTS",
    "STREAM_NAMES",
    "USER_COMPONENTS",
    "Component",
    "Op",
    "TextItem",
    "has_lone_surrogate",
    "validate_cursor",
    "validate_op",
]

Component = dict[str, Any]
Op = list[Component]
#: One item of a text splice after normalisation: a skip, an insert or ``{"d": n}``.
TextItem = int | str | dict[str, int]

CELL_TYPES = frozenset({"code", "markdown", "raw"})
STREAM_NAMES = frozenset({"stdout", "stderr"})
EXEC_STATES = frozenset({"queued", "running", "done", "error", "aborted"})
USER_COMPONENTS = frozenset(
    {
        "cell_insert",
        "cell_delete",
        "cell_restore",
        "cell_move",
        "text",
        "cell_type",
        "meta_set",
        "outputs_clear",
    }
)
SERVER_COMPONENTS = frozenset(
    {"outputs_append", "stream_append", "display_update", "exec_count", "exec_state"}
)

_ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_POS_CHARS = re.compile(r"[0-9A-Za-z]+")
# Anything orjson can encode: signed and unsigned 64-bit integers.
_MIN_JSON_INT = -(2**63)
_MAX_JSON_INT = 2**64 - 1


class _Bad(Exception):
    """Internal: a validation failure; `where` collects the path pieces while unwinding."""

    def __init__(self, reason: str, where: str = "", code: str = "invalid_op") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.where = [where] if where else []

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.where))


def _show(value: object) -> str:
    """A short, ASCII-safe rendering of client input for error messages."""
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _key_path(key: str) -> str:
    return f".{key}" if key.isascii() and key.isidentifier() else f"[{_show(key)}]"


def has_lone_surrogate(text: str) -> bool:
    """True when `text` holds an unpaired UTF-16 surrogate (it cannot be encoded as UTF-8)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _string(value: object, where: str) -> str:
    if type(value) is not str:
        raise _Bad(f"must be a string, not {_show(value)}", where)
    if has_lone_surrogate(value):
        raise _Bad("holds a lone UTF-16 surrogate", where, "lone_surrogate")
    return value


def _cell_id(value: object, where: str, limits: Limits) -> str:
    if type(value) is not str or len(value) > limits.max_id_len or not _ID_CHARS.fullmatch(value):
        raise _Bad(
            f"must be a cell id of 1 to {limits.max_id_len} of [A-Za-z0-9_-], not {_show(value)}", where
        )
    return value


def _pos(value: object, where: str, limits: Limits) -> str:
    if type(value) is not str or len(value) > limits.max_pos_len or not _POS_CHARS.fullmatch(value):
        raise _Bad(
            f"must be a position key of 1 to {limits.max_pos_len} of [0-9A-Za-z], not {_show(value)}", where
        )
    return value


def _count(value: object, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SAFE_INT:
        raise _Bad(f"must be an integer from 0 to 2**53, not {_show(value)}", where)
    return value


def _choice(value: object, allowed: frozenset[str], where: str) -> str:
    if type(value) is not str or value not in allowed:
        raise _Bad(f"must be one of {', '.join(sorted(allowed))}, not {_show(value)}", where)
    return value


def _json(value: object, depth: int, limits: Limits) -> Any:
    """A validated deep copy of a free JSON value (metadata, attachments, outputs)."""
    kind = type(value)
    if kind is str:
        return _string(value, "")
    if kind is dict:
        if depth >= limits.max_json_depth:
            raise _Bad(f"nests deeper than {limits.max_json_depth} levels")
        out: dict[str, Any] = {}
        for key, item in value.items():  # type: ignore[attr-defined]
            try:
                out[_string(key, "")] = _json(item, depth + 1, limits)
            except _Bad as bad:
                bad.where.append(_key_path(key) if type(key) is str else f"[{_show(key)}]")
                raise
        return out
    if kind is list:
        if depth >= limits.max_json_depth:
            raise _Bad(f"nests deeper than {limits.max_json_depth} levels")
        items: list[Any] = []
        for index, item in enumerate(value):  # type: ignore[arg-type]
            try:
                items.append(_json(item, depth + 1, limits))
            except _Bad as bad:
                bad.where.append(f"[{index}]")
                raise
        return items
    if kind is int:
        if not _MIN_JSON_INT <= value <= _MAX_JSON_INT:  # type: ignore[operator]
            raise _Bad("is an integer out of the 64-bit range")
        return value
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise _Bad("is not a finite number")
        return value
    if value is None or kind is bool:
        return value
    raise _Bad(f"is not a JSON value: {_show(value)}")


def _json_object(value: object, where: str, limits: Limits) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Bad(f"must be an object, not {_show(value)}", where)
    try:
        result: dict[str, Any] = _json(value, 1, limits)
    except _Bad as bad:
        bad.where.append(where)
        raise
    return result


_NO_KEYS: frozenset[str] = frozenset()


def _check_keys(comp: dict[str, Any], required: frozenset[str], optional: frozenset[str] = _NO_KEYS) -> None:
    keys = comp.keys()
    if keys == required:
        return
    missing = required - keys
    if missing:
        raise _Bad(f"is missing {', '.join(repr(k) for k in sorted(missing))}")
    unknown = keys - required - optional
    if unknown:
        raise _Bad(f"has unknown key {', '.join(sorted(_show(k) for k in unknown))}")


# Text splices ------------------------------------------------------------------------------

_SKIP, _INSERT, _DELETE = 1, 2, 3


def _text_ops(raw: object, limits: Limits) -> list[TextItem]:
    """Validate a splice and normalise it: no zero skips or empty inserts, adjacent items of
    one kind merged, no trailing skip. One pass; merged inserts are joined once (linear)."""
    if type(raw) is not list:
        raise _Bad(f"must be a list of skips, inserts and deletes, not {_show(raw)}", ".ops")
    if len(raw) > limits.max_text_ops_per_component:
        raise _Bad(f"has more than {limits.max_text_ops_per_component} items", ".ops", "op_too_large")
    out: list[Any] = []
    last = 0  # kind of out[-1]
    run: list[str] | None = None  # pieces of out[-1] while adjacent inserts are being merged
    inserted = 0
    for index, item in enumerate(raw):
        kind = type(item)
        if kind is int:
            if item <= 0 or item > MAX_SAFE_INT:
                if item == 0:
                    continue
                raise _Bad(f"a skip must be an integer from 0 to 2**53, not {item}", f".ops[{index}]")
            if last == _SKIP:
                item += out[-1]
                if item > MAX_SAFE_INT:
                    raise _Bad("the skips add up to more than 2**53", f".ops[{index}]")
                out[-1] = item
            else:
                if run is not None:
                    out[-1], run = "".join(run), None
                out.append(item)
                last = _SKIP
        elif kind is str:
            if not item:
                continue
            if has_lone_surrogate(item):
                raise _Bad("holds a lone UTF-16 surrogate", f".ops[{index}]", "lone_surrogate")
            inserted += len(item)
            if inserted > limits.max_insert_chars:
                raise _Bad(f"inserts more than {limits.max_insert_chars} characters", ".ops", "op_too_large")
            if last == _INSERT:
                if run is None:
                    run = [out[-1]]
                run.append(item)
            else:
                out.append(item)
                last = _INSERT
        elif kind is dict:
            n = item.get("d") if len(item) == 1 else None
            if type(n) is not int or not 1 <= n <= MAX_SAFE_INT:
                raise _Bad(
                    f'a delete must be {{"d": n}} with n from 1 to 2**53, not {_show(item)}', f".ops[{index}]"
                )
            if last == _DELETE:
                n += out[-1]["d"]
                if n > MAX_SAFE_INT:
                    raise _Bad("the deletes add up to more than 2**53", f".ops[{index}]")
                out[-1] = {"d": n}
            else:
                if run is not None:
                    out[-1], run = "".join(run), None
                out.append({"d": n})
                last = _DELETE
        else:
            raise _Bad(
                f'must be a skip (int), an insert (str) or a delete ({{"d": n}}), not {_show(item)}',
                f".ops[{index}]",
            )
    if run is not None:
        out[-1] = "".join(run)
    elif last == _SKIP:  # a trailing skip says nothing
        out.pop()
    return out


# Components --------------------------------------------------------------------------------

_ID_KEYS = frozenset({"t", "id"})
_MOVE_KEYS = frozenset({"t", "id", "pos"})
_TEXT_KEYS = frozenset({"t", "id", "ops"})
_INSERT_KEYS = frozenset({"t", "id", "pos", "cell"})
_TYPE_KEYS = frozenset({"t", "id", "value"})
_META_KEYS = frozenset({"t", "id", "key", "value"})
_OUTPUT_KEYS = frozenset({"t", "id", "output"})
_OUTPUT_OPTIONAL = frozenset({"display_id"})
_STREAM_KEYS = frozenset({"t", "id", "name", "text"})
_DISPLAY_KEYS = frozenset({"t", "display_id", "output"})
_COUNT_KEYS = frozenset({"t", "id", "n"})
_STATE_KEYS = frozenset({"t", "id", "state"})
_CELL_REQUIRED = frozenset({"cell_type", "source"})
_CELL_OPTIONAL = frozenset({"metadata", "attachments"})


def _cell_insert(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _INSERT_KEYS)
    cell_id = _cell_id(comp["id"], ".id", limits)
    pos = _pos(comp["pos"], ".pos", limits)
    raw = comp["cell"]
    if type(raw) is not dict:
        raise _Bad(f"must be an object, not {_show(raw)}", ".cell")
    try:
        _check_keys(raw, _CELL_REQUIRED, _CELL_OPTIONAL)
        cell_type = _choice(raw["cell_type"], CELL_TYPES, ".cell_type")
        source = _string(raw["source"], ".source")
        if len(source) > limits.max_insert_chars:
            raise _Bad(f"is longer than {limits.max_insert_chars} characters", ".source", "op_too_large")
        cell: dict[str, Any] = {"cell_type": cell_type, "source": source}
        if "metadata" in raw:
            cell["metadata"] = _json_object(raw["metadata"], ".metadata", limits)
        if "attachments" in raw:
            if cell_type == "code":
                raise _Bad("are not allowed on a code cell (nbformat)", ".attachments")
            cell["attachments"] = _json_object(raw["attachments"], ".attachments", limits)
    except _Bad as bad:
        bad.where.append(".cell")
        raise
    return {"t": "cell_insert", "id": cell_id, "pos": pos, "cell": cell}


def _id_only(name: str) -> Callable[[dict[str, Any], Limits], Component]:
    def check(comp: dict[str, Any], limits: Limits) -> Component:
        _check_keys(comp, _ID_KEYS)
        return {"t": name, "id": _cell_id(comp["id"], ".id", limits)}

    check.__name__ = f"_{name}"
    return check


def _cell_move(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _MOVE_KEYS)
    return {
        "t": "cell_move",
        "id": _cell_id(comp["id"], ".id", limits),
        "pos": _pos(comp["pos"], ".pos", limits),
    }


def _text(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _TEXT_KEYS)
    return {"t": "text", "id": _cell_id(comp["id"], ".id", limits), "ops": _text_ops(comp["ops"], limits)}


def _cell_type(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _TYPE_KEYS)
    cell_id = _cell_id(comp["id"], ".id", limits)
    return {"t": "cell_type", "id": cell_id, "value": _choice(comp["value"], CELL_TYPES, ".value")}


def _meta_set(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _META_KEYS)
    raw_id = comp["id"]
    cell_id = None if raw_id is None else _cell_id(raw_id, ".id", limits)
    key = _string(comp["key"], ".key")
    if not 1 <= len(key) <= limits.max_meta_key_len:
        raise _Bad(f"must be 1 to {limits.max_meta_key_len} characters long", ".key")
    try:
        value = _json(comp["value"], 1, limits)
    except _Bad as bad:
        bad.where.append(".value")
        raise
    return {"t": "meta_set", "id": cell_id, "key": key, "value": value}


def _display_id(value: object, limits: Limits) -> str:
    display_id = _string(value, ".display_id")
    if not 1 <= len(display_id) <= limits.max_display_id_len:
        raise _Bad(f"must be 1 to {limits.max_display_id_len} characters long", ".display_id")
    return display_id


def _outputs_append(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _OUTPUT_KEYS, _OUTPUT_OPTIONAL)
    out = {
        "t": "outputs_append",
        "id": _cell_id(comp["id"], ".id", limits),
        "output": _json_object(comp["output"], ".output", limits),
    }
    if "display_id" in comp:
        out["display_id"] = _display_id(comp["display_id"], limits)
    return out


def _stream_append(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _STREAM_KEYS)
    return {
        "t": "stream_append",
        "id": _cell_id(comp["id"], ".id", limits),
        "name": _choice(comp["name"], STREAM_NAMES, ".name"),
        "text": _string(comp["text"], ".text"),
    }


def _display_update(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _DISPLAY_KEYS)
    return {
        "t": "display_update",
        "display_id": _display_id(comp["display_id"], limits),
        "output": _json_object(comp["output"], ".output", limits),
    }


def _exec_count(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _COUNT_KEYS)
    n = comp["n"]
    return {
        "t": "exec_count",
        "id": _cell_id(comp["id"], ".id", limits),
        "n": None if n is None else _count(n, ".n"),
    }


def _exec_state(comp: dict[str, Any], limits: Limits) -> Component:
    _check_keys(comp, _STATE_KEYS)
    cell_id = _cell_id(comp["id"], ".id", limits)
    return {"t": "exec_state", "id": cell_id, "state": _choice(comp["state"], EXEC_STATES, ".state")}


_Validator = Callable[[dict[str, Any], Limits], Component]

_USER: dict[str, _Validator] = {
    "cell_insert": _cell_insert,
    "cell_delete": _id_only("cell_delete"),
    "cell_restore": _id_only("cell_restore"),
    "cell_move": _cell_move,
    "text": _text,
    "cell_type": _cell_type,
    "meta_set": _meta_set,
    "outputs_clear": _id_only("outputs_clear"),
}
_SERVER: dict[str, _Validator] = {
    "outputs_append": _outputs_append,
    "stream_append": _stream_append,
    "display_update": _display_update,
    "exec_count": _exec_count,
    "exec_state": _exec_state,
}
assert _USER.keys() == USER_COMPONENTS and _SERVER.keys() == SERVER_COMPONENTS


def _server_validator(kind: object, index: int, allow_server: bool) -> _Validator:
    validator = _SERVER.get(kind) if type(kind) is str else None
    if validator is None:
        raise ProtocolError(
            "invalid_op", f"op[{index}].t: is not a known component type: {_show(kind)}", close_code=None
        )
    if not allow_server:
        raise ProtocolError(
            "server_component",
            f"op[{index}].t: {kind!r} components are written by kernels only",
            close_code=None,
        )
    return validator


def validate_op(raw: object, *, limits: Limits = DEFAULT_LIMITS, allow_server: bool = False) -> Op:
    """Validate an op and return its canonical form.

    Promises: the result is a new list of new component dicts with exactly the keys the
    contract defines, in contract order; text splices are normalised (zero skips and empty
    inserts dropped, neighbours of one kind merged, trailing skip dropped); free JSON values
    (metadata, attachments, outputs, meta values) are validated deep copies. Applying
    `validate_op` to its own result returns an equal list.

    Raises `ProtocolError` with ``close_code=None`` (a reject) and ``seq=None`` (the caller
    knows the seq) and code ``invalid_op``, ``server_component`` (a server-only component and
    ``allow_server`` is False), ``op_too_large`` or ``lone_surrogate``; the message names the
    offending component and field, e.g. ``op[2].ops[0]: …``.
    """
    if type(raw) is not list:
        raise ProtocolError(
            "invalid_op", f"op: must be a list of components, not {_show(raw)}", close_code=None
        )
    if not raw:
        raise ProtocolError("invalid_op", "op: must hold at least one component", close_code=None)
    if len(raw) > limits.max_components_per_op:
        raise ProtocolError(
            "op_too_large", f"op: has more than {limits.max_components_per_op} components", close_code=None
        )
    result: Op = []
    for index, comp in enumerate(raw):
        if type(comp) is not dict:
            raise ProtocolError(
                "invalid_op", f"op[{index}]: must be an object, not {_show(comp)}", close_code=None
            )
        kind = comp.get("t")
        validator = _USER.get(kind) if type(kind) is str else None
        if validator is None:
            validator = _server_validator(kind, index, allow_server)
        try:
            result.append(validator(comp, limits))
        except _Bad as bad:
            raise ProtocolError(
                bad.code, f"{bad.path(f'op[{index}]')}: {bad.reason}", close_code=None
            ) from None
    return result


_CURSOR_KEYS = frozenset({"cell", "anchor", "head"})


def validate_cursor(raw: object, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any] | None:
    """Validate a presence cursor ``{"cell": id, "anchor": n, "head": n}`` or ``None``.

    Promises a fresh dict with exactly those keys (or None). Raises `ProtocolError` with code
    ``invalid_field`` and close code 4400 (a presence message is not an op: nothing to reject).
    """
    if raw is None:
        return None
    try:
        if type(raw) is not dict:
            raise _Bad(f"must be an object or null, not {_show(raw)}")
        _check_keys(raw, _CURSOR_KEYS)
        return {
            "cell": _cell_id(raw["cell"], ".cell", limits),
            "anchor": _count(raw["anchor"], ".anchor"),
            "head": _count(raw["head"], ".head"),
        }
    except _Bad as bad:
        raise ProtocolError(
            "invalid_field", f"{bad.path('cursor')}: {bad.reason}", close_code=CLOSE_PROTOCOL_ERROR
        ) from None
