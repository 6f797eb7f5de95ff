"""Bytes ↔ messages: `decode_client` for what clients send, `encode` for what the server sends.

Decoding is on the hot path of every keystroke: one size check, one `orjson.loads`, one dict
dispatch, one `validate_op`. Only a failing message takes the slow path that works out what is
wrong with it (invalid UTF-8, a lone surrogate, or plain bad JSON).

Encoding produces compact JSON with ``type`` first. The broadcast path encodes each committed op
entry once (`encode_op_entry`) and builds every frame that carries it by concatenation
(`ops_frame_payload`, `welcome_payload_with_ops`); a cached encoded document is embedded the
same way (`welcome_payload_with_doc`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import orjson

from protocol.components import has_lone_surrogate, validate_cursor, validate_op
from protocol.errors import CLOSE_PROTOCOL_ERROR, CLOSE_TOO_LARGE, ProtocolError
from protocol.limits import CELL_ID_RE, DEFAULT_LIMITS, MAX_SAFE_INT, Limits
from protocol.messages import (
    Ack,
    ClientMessage,
    Error,
    ExecuteMessage,
    InputReplyMessage,
    InputRequest,
    InterruptMessage,
    Kernel,
    OpMessage,
    Ops,
    PingMessage,
    Pong,
    Presence,
    PresenceMessage,
    Reject,
    ServerMessage,
    Welcome,
)

__all__ = [
    "decode_client",
    "encode",
    "encode_client",
    "encode_op_entry",
    "ops_frame_payload",
    "welcome_head",
    "welcome_payload_with_doc",
    "welcome_payload_with_ops",
]

Data = bytes | bytearray | memoryview | str


def _close(code: str, message: str) -> NoReturn:
    raise ProtocolError(code, message, close_code=CLOSE_PROTOCOL_ERROR)


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Decoding ----------------------------------------------------------------------------------


def decode_client(data: Data, limits: Limits = DEFAULT_LIMITS) -> ClientMessage:
    """Parse and validate one client WebSocket message.

    Promises: returns one of `OpMessage`, `PresenceMessage`, `ExecuteMessage`,
    `InterruptMessage`, `PingMessage` with every field validated (an op normalised by
    `validate_op`), or raises `ProtocolError` — never any other exception, for any input.
    The checks run in this order: size (``message_too_large``, 4413), UTF-8 and JSON syntax
    (``invalid_utf8``, ``lone_surrogate``, ``malformed_json``), shape (``not_an_object``,
    ``missing_field``, ``unknown_field``, ``invalid_field``, ``unknown_type``; all 4400), then
    the op payload (a reject: ``close_code`` None and ``seq`` set).
    """
    _check_size(data, limits)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        _explain_bad_json(data, exc)
    if type(value) is not dict:
        _close("not_an_object", f"a message must be a JSON object, not {type(value).__name__}")
    kind = value.get("type")
    if type(kind) is not str:
        if "type" not in value:
            _close("missing_field", 'type: a message needs a "type" field')
        _close("invalid_field", f"type: must be a string, not {_show(kind)}")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        _close("unknown_type", f"type: {_show(kind)} is not a client message type")
    return decoder(value, limits)


def _check_size(data: Data, limits: Limits) -> None:
    limit = limits.max_message_bytes
    size = len(data)
    if isinstance(data, str) and size <= limit < size * 4:  # only then can UTF-8 tip it over
        size = len(data.encode("utf-8", "surrogatepass"))
    elif isinstance(data, memoryview):
        size = data.nbytes
    if size > limit:
        raise ProtocolError(
            "message_too_large",
            f"the message is {size} bytes; the limit is {limit}",
            close_code=CLOSE_TOO_LARGE,
        )


def _explain_bad_json(data: Data, exc: orjson.JSONDecodeError) -> NoReturn:
    """The slow path: say why `data` is not acceptable JSON, as a `ProtocolError`."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as bad:
            _close("invalid_utf8", f"the message is not valid UTF-8 (at byte {bad.start})")
    if "surrogate" in exc.msg or has_lone_surrogate(text):
        # orjson refuses lone surrogates outright; the stdlib parser keeps them, so we can say
        # where the surrogate is and, inside an op, reject the op instead of closing.
        try:
            value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except (ValueError, RecursionError):
            pass
        else:
            where = _find_surrogate(value)
            if where is not None:
                seq = _readable_seq(value) if where.startswith("op[") else None
                raise ProtocolError(
                    "lone_surrogate",
                    f"{where}: holds a lone UTF-16 surrogate, which is not valid Unicode",
                    close_code=None if seq is not None else CLOSE_PROTOCOL_ERROR,
                    seq=seq,
                )
    _close("malformed_json", f"the message is not valid JSON: {exc.msg} (at character {exc.pos})")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def _find_surrogate(value: object) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, or None."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if type(item) is str:
            if has_lone_surrogate(item):
                return path or "message"
        elif type(item) is list:
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(item))))
        elif type(item) is dict:
            for key in reversed(list(item)):
                if has_lone_surrogate(key):
                    return f"{path}[{_show(key)}]" if path else f"[{_show(key)}]"
                stack.append((f"{path}.{key}" if path else key, item[key]))
    return None


def _readable_seq(value: object) -> int | None:
    """The seq of an op message whose envelope is valid, else None."""
    if type(value) is not dict or value.get("type") != "op" or value.keys() != _OP_KEYS:
        return None
    seq, base = value["seq"], value["base"]
    if type(seq) is int and 1 <= seq <= MAX_SAFE_INT and type(base) is int and 0 <= base <= MAX_SAFE_INT:
        return seq
    return None


def _check_keys(msg: dict[str, Any], expected: frozenset[str]) -> None:
    keys = msg.keys()
    if keys == expected:
        return
    missing = expected - keys
    if missing:
        name = sorted(missing)[0]
        _close("missing_field", f"{name}: a {msg['type']!r} message needs a {name!r} field")
    unknown = sorted(_show(key) for key in keys - expected)[0]
    _close("unknown_field", f"{unknown}: is not a field of a {msg['type']!r} message")


def _int_field(msg: dict[str, Any], name: str, minimum: int) -> int:
    value = msg[name]
    if type(value) is not int or not minimum <= value <= MAX_SAFE_INT:
        _close("invalid_field", f"{name}: must be an integer from {minimum} to 2**53, not {_show(value)}")
    return value


_OP_KEYS = frozenset({"type", "seq", "base", "op"})


def _decode_op(msg: dict[str, Any], limits: Limits) -> OpMessage:
    _check_keys(msg, _OP_KEYS)
    seq = _int_field(msg, "seq", 1)
    base = _int_field(msg, "base", 0)
    raw = msg["op"]
    if type(raw) is not list:
        _close("invalid_field", f"op: must be a list of components, not {_show(raw)}")
    try:
        op = validate_op(raw, limits=limits)
    except ProtocolError as error:
        error.seq = seq
        raise
    return OpMessage(seq, base, op)


_PRESENCE_KEYS = frozenset({"type", "cursor"})


def _decode_presence(msg: dict[str, Any], limits: Limits) -> PresenceMessage:
    _check_keys(msg, _PRESENCE_KEYS)
    return PresenceMessage(validate_cursor(msg["cursor"], limits=limits))


_EXECUTE_KEYS = frozenset({"type", "cells"})


def _decode_execute(msg: dict[str, Any], limits: Limits) -> ExecuteMessage:
    _check_keys(msg, _EXECUTE_KEYS)
    cells = msg["cells"]
    if type(cells) is not list:
        _close("invalid_field", f"cells: must be a list of cell ids, not {_show(cells)}")
    if len(cells) > limits.max_cells_per_execute:
        _close("invalid_field", f"cells: must hold at most {limits.max_cells_per_execute} cell ids")
    for index, cell in enumerate(cells):
        if type(cell) is not str or len(cell) > limits.max_id_len or not CELL_ID_RE.match(cell):
            _close("invalid_field", f"cells[{index}]: must be a cell id, not {_show(cell)}")
    return ExecuteMessage(list(cells))


_BARE_KEYS = frozenset({"type"})


def _decode_interrupt(msg: dict[str, Any], limits: Limits) -> InterruptMessage:
    _check_keys(msg, _BARE_KEYS)
    return InterruptMessage()


_INPUT_KEYS = frozenset({"type", "value"})


def _decode_input_reply(msg: dict[str, Any], limits: Limits) -> InputReplyMessage:
    _check_keys(msg, _INPUT_KEYS)
    value = msg["value"]
    if type(value) is not str:
        _close("invalid_field", f"value: must be a string, not {_show(value)}")
    if has_lone_surrogate(value):
        _close("lone_surrogate", "value: holds a lone UTF-16 surrogate")
    return InputReplyMessage(value)


def _decode_ping(msg: dict[str, Any], limits: Limits) -> PingMessage:
    _check_keys(msg, _BARE_KEYS)
    return PingMessage()


_DECODERS: dict[str, Callable[[dict[str, Any], Limits], ClientMessage]] = {
    "op": _decode_op,
    "presence": _decode_presence,
    "execute": _decode_execute,
    "interrupt": _decode_interrupt,
    "input_reply": _decode_input_reply,
    "ping": _decode_ping,
}


# Encoding ----------------------------------------------------------------------------------


def encode_op_entry(entry: Mapping[str, Any]) -> bytes:
    """One committed op as it appears in ``ops`` frames and resume welcomes.

    Promises compact JSON ``{"v","client","seq","user","op"}`` in that key order, whatever
    the order or extra keys of `entry` (e.g. ``time`` is left out). Raises KeyError if a key
    is missing. Encode each committed op once and reuse the bytes.
    """
    return orjson.dumps(
        {
            "v": entry["v"],
            "client": entry["client"],
            "seq": entry["seq"],
            "user": entry["user"],
            "op": entry["op"],
        }
    )


def ops_frame_payload(encoded_entries: Sequence[bytes]) -> bytes:
    """``{"type":"ops","ops":[e1,e2,…]}`` built by concatenating already encoded entries.

    Promises the same bytes as ``encode(Ops(entries))``; the caller keeps entries in version
    order without gaps (not checked here).
    """
    return b'{"type":"ops","ops":[' + b",".join(encoded_entries) + b"]}"


def welcome_head(client: str, role: str, user: Mapping[str, Any], version: int) -> bytes:
    """The start of a welcome, up to and without its closing brace.

    For writing a large snapshot welcome in pieces (head, ``,"notebook":``, the shared encoded
    DOC, ``}``) without copying the DOC; the welcome_payload_* functions build on it.
    """
    head = orjson.dumps({"type": "welcome", "client": client, "role": role, "user": user, "version": version})
    return head[:-1]  # drop the closing brace


def welcome_payload_with_doc(
    client: str, role: str, user: Mapping[str, Any], version: int, doc_json_bytes: bytes
) -> bytes:
    """A snapshot welcome embedding an already encoded document (``DOC``) as ``notebook``.

    Promises the same bytes as ``encode(Welcome(client, role, user, version, notebook=doc))``
    when `doc_json_bytes` is ``orjson.dumps(doc)``. The bytes are embedded unchecked.
    """
    return welcome_head(client, role, user, version) + b',"notebook":' + doc_json_bytes + b"}"


def welcome_payload_with_ops(
    client: str, role: str, user: Mapping[str, Any], version: int, encoded_entries: Sequence[bytes]
) -> bytes:
    """A resume welcome carrying already encoded op entries (see `encode_op_entry`).

    Promises the same bytes as ``encode(Welcome(client, role, user, version, ops=entries))``.
    """
    return welcome_head(client, role, user, version) + b',"ops":[' + b",".join(encoded_entries) + b"]}"


def encode(msg: ServerMessage) -> bytes:
    """One server message as the payload of a WebSocket text frame.

    Promises compact UTF-8 JSON with ``type`` first and exactly the contract's shape:
    ``reject`` nests its code and message under ``error``; ``welcome`` carries ``notebook`` or
    ``ops``; op entries are encoded as by `encode_op_entry`. Raises TypeError for anything that
    is not a server message (and orjson's error for values JSON cannot hold).
    """
    match msg:
        case Ops(ops=ops):
            return ops_frame_payload([encode_op_entry(entry) for entry in ops])
        case Presence(viewers=viewers, editors=editors):
            return orjson.dumps({"type": "presence", "viewers": viewers, "editors": editors})
        case Ack(seq=seq, v=v):
            return orjson.dumps({"type": "ack", "seq": seq, "v": v})
        case Reject(seq=seq, code=code, message=message):
            return orjson.dumps({"type": "reject", "seq": seq, "error": {"code": code, "message": message}})
        case Kernel(state=state, queue=queue, name=name, running=running):
            return orjson.dumps(
                {"type": "kernel", "state": state, "name": name, "queue": queue, "running": running}
            )
        case InputRequest(cell=cell, prompt=prompt, password=password):
            return orjson.dumps(
                {"type": "input_request", "cell": cell, "prompt": prompt, "password": password}
            )
        case Pong():
            return b'{"type":"pong"}'
        case Error(code=code, message=message):
            return orjson.dumps({"type": "error", "code": code, "message": message})
        case Welcome(client=client, role=role, user=user, version=version, notebook=notebook, ops=ops):
            if ops is not None:
                entries = [encode_op_entry(entry) for entry in ops]
                return welcome_payload_with_ops(client, role, user, version, entries)
            return welcome_payload_with_doc(client, role, user, version, orjson.dumps(notebook))
    raise TypeError(f"not a server message: {msg!r}")


def encode_client(msg: ClientMessage) -> bytes:
    """One client message as JSON (for test and load-test clients): the inverse of
    `decode_client` on valid messages, so ``decode_client(encode_client(m)) == m``."""
    match msg:
        case OpMessage(seq=seq, base=base, op=op):
            return orjson.dumps({"type": "op", "seq": seq, "base": base, "op": op})
        case PresenceMessage(cursor=cursor):
            return orjson.dumps({"type": "presence", "cursor": cursor})
        case ExecuteMessage(cells=cells):
            return orjson.dumps({"type": "execute", "cells": cells})
        case InterruptMessage():
            return b'{"type":"interrupt"}'
        case InputReplyMessage(value=value):
            return orjson.dumps({"type": "input_reply", "value": value})
        case PingMessage():
            return b'{"type":"ping"}'
    raise TypeError(f"not a client message: {msg!r}")
