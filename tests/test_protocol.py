"""decode_client: every class of bad message maps to the right code and close code."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from protocol import (
    DEFAULT_LIMITS,
    ERROR_CODES,
    ExecuteMessage,
    InputReplyMessage,
    InterruptMessage,
    Limits,
    OpMessage,
    PingMessage,
    PresenceMessage,
    ProtocolError,
    decode_client,
)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def op_msg(op: Any, seq: Any = 1, base: Any = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "op", "seq": seq, "base": base, "op": op, **extra}


def text_comp(*ops: Any, cell: str = "c1") -> dict[str, Any]:
    return {"t": "text", "id": cell, "ops": list(ops)}


def fails(data: bytes | str, code: str, close: int | None = 4400, seq: int | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(data)
    err = info.value
    assert (err.code, err.close_code, err.seq) == (code, close, seq), err
    assert err.message and isinstance(err.message, str)
    json.dumps(err.message, ensure_ascii=False).encode("utf-8")  # always encodable
    assert code in ERROR_CODES
    return err


# Valid messages -----------------------------------------------------------------------------


def test_decodes_each_client_message() -> None:
    op = [{"t": "text", "id": "c1", "ops": [3, "x"]}]
    assert decode_client(dumps(op_msg(op, seq=41, base=908))) == OpMessage(41, 908, op)
    cursor = {"cell": "c1", "anchor": 0, "head": 4}
    assert decode_client(dumps({"type": "presence", "cursor": cursor})) == PresenceMessage(cursor)
    assert decode_client(dumps({"type": "presence", "cursor": None})) == PresenceMessage(None)
    assert decode_client(dumps({"type": "execute", "cells": ["a", "b-2"]})) == ExecuteMessage(["a", "b-2"])
    assert decode_client(b'{"type":"interrupt"}') == InterruptMessage()
    assert decode_client(b'{"type":"input_reply","value":"42"}') == InputReplyMessage("42")
    assert decode_client(b'{"type":"ping"}') == PingMessage()


def test_accepts_str_bytearray_and_memoryview() -> None:
    data = b'{"type":"ping"}'
    for form in (data.decode(), bytearray(data), memoryview(data)):
        assert decode_client(form) == PingMessage()


def test_max_safe_ints_are_accepted() -> None:
    msg = decode_client(dumps(op_msg([text_comp(2**53, "x")], seq=2**53, base=2**53)))
    assert isinstance(msg, OpMessage) and msg.seq == 2**53 and msg.base == 2**53


# Frame-level errors: close ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"{", b"nope", b'{"type":"ping"} x', b"NaN", b"1e400", b"[" * 2000, b"{'a':1}"]
)
def test_malformed_json_closes(data: bytes) -> None:
    fails(data, "malformed_json")


@pytest.mark.parametrize(
    "data", [b"\xff", b'{"type":"\xc3"}', b'"\xed\xa0\x80"', b'{"type":"ping","x":"\x80"}']
)
def test_invalid_utf8_closes(data: bytes) -> None:
    fails(data, "invalid_utf8")


@pytest.mark.parametrize("data", [b"[]", b"[1,2]", b"3", b"-1.5", b'"ping"', b"null", b"true"])
def test_non_objects_close(data: bytes) -> None:
    fails(data, "not_an_object")


def test_type_field() -> None:
    fails(b"{}", "missing_field")
    fails(b'{"seq":1}', "missing_field")
    for bad in (b"1", b"null", b"true", b'["op"]', b"{}"):
        fails(b'{"type":' + bad + b"}", "invalid_field")
    for unknown in ("welcome", "ops", "Op", "", "pong", "op "):
        fails(dumps({"type": unknown}), "unknown_type")


def test_missing_and_unknown_top_level_fields_close() -> None:
    fails(dumps({"type": "op", "base": 0, "op": [text_comp("x")]}), "missing_field")
    fails(dumps({"type": "op", "seq": 1, "op": [text_comp("x")]}), "missing_field")
    fails(dumps({"type": "op", "seq": 1, "base": 0}), "missing_field")
    fails(dumps(op_msg([text_comp("x")], extra=1)), "unknown_field")
    fails(dumps({"type": "presence"}), "missing_field")
    fails(dumps({"type": "execute"}), "missing_field")
    fails(dumps({"type": "ping", "id": 3}), "unknown_field")
    fails(dumps({"type": "interrupt", "now": True}), "unknown_field")
    fails(dumps({"type": "input_reply"}), "missing_field")
    fails(dumps({"type": "input_reply", "value": 3}), "invalid_field")


@pytest.mark.parametrize(
    "seq, base",
    [
        (True, 0),  # bool is not an int
        (1.0, 0),  # nor is a float
        ("1", 0),
        (None, 0),
        (0, 0),  # seq starts at 1
        (-1, 0),
        (2**53 + 1, 0),
        (1, -1),
        (1, False),
        (1, 0.0),
        (1, "0"),
        (1, 2**53 + 1),
        (1, 1e300),
    ],
)
def test_bad_seq_or_base_closes(seq: Any, base: Any) -> None:
    err = fails(dumps(op_msg([text_comp("x")], seq=seq, base=base)), "invalid_field")
    assert ("seq" in err.message) or ("base" in err.message)


def test_op_that_is_not_a_list_closes() -> None:
    bad: list[Any] = [{}, "text", None, 3]
    for op in bad:
        fails(dumps(op_msg(op)), "invalid_field")


def test_huge_integer_literal_is_not_an_int() -> None:
    fails(b'{"type":"op","seq":123456789012345678901234567890,"base":0,"op":[]}', "invalid_field")


@pytest.mark.parametrize(
    "cursor",
    [
        {"cell": "c1", "anchor": 0},
        {"cell": "c1", "anchor": 0, "head": 0, "x": 1},
        {"cell": "c 1", "anchor": 0, "head": 0},
        {"cell": "c1", "anchor": -1, "head": 0},
        {"cell": "c1", "anchor": 0, "head": True},
        {"cell": "c1", "anchor": 0.5, "head": 0},
        [],
        "c1",
        0,
    ],
)
def test_bad_cursor_closes(cursor: Any) -> None:
    err = fails(dumps({"type": "presence", "cursor": cursor}), "invalid_field")
    assert err.message.startswith("cursor")


@pytest.mark.parametrize("cells", ["all", None, {"a": 1}, [1], ["a b"], [""], ["x" * 65], [None]])
def test_bad_execute_cells_close(cells: Any) -> None:
    fails(dumps({"type": "execute", "cells": cells}), "invalid_field")


def test_execute_cell_count_is_bounded() -> None:
    limits = Limits(max_cells_per_execute=2)
    assert decode_client(dumps({"type": "execute", "cells": ["a", "b"]}), limits) == ExecuteMessage(
        ["a", "b"]
    )
    with pytest.raises(ProtocolError) as info:
        decode_client(dumps({"type": "execute", "cells": ["a", "b", "c"]}), limits)
    assert info.value.code == "invalid_field"


# Size ---------------------------------------------------------------------------------------


def test_oversized_message_closes_4413() -> None:
    limit = DEFAULT_LIMITS.max_message_bytes
    assert limit == 1_048_576
    exact = b'{"type":"ping"}' + b" " * (limit - 15)
    assert len(exact) == limit and decode_client(exact) == PingMessage()
    fails(exact + b" ", "message_too_large", 4413)
    big = dumps(op_msg([text_comp("x" * limit)]))
    fails(big, "message_too_large", 4413)
    fails(big.decode(), "message_too_large", 4413)
    fails(b"\xff" * (limit + 1), "message_too_large", 4413)  # size is checked first


def test_str_size_counts_utf8_bytes() -> None:
    limit = DEFAULT_LIMITS.max_message_bytes
    # 400,000 three-byte characters: fewer code points than the limit, more bytes.
    text = json.dumps(op_msg([text_comp("€" * 400_000)]), ensure_ascii=False)
    assert len(text) < limit < len(text.encode())
    fails(text, "message_too_large", 4413)
    small = Limits(max_message_bytes=20)
    with pytest.raises(ProtocolError) as info:
        decode_client('{"type":"ping","é":"' + "é" * 3 + '"}', small)
    assert info.value.code == "message_too_large"


# Op payload errors: reject with seq ---------------------------------------------------------


def reject(op: Any, code: str = "invalid_op", seq: int = 7) -> ProtocolError:
    return fails(dumps(op_msg(op, seq=seq)), code, None, seq)


def test_empty_op_is_rejected() -> None:
    reject([])


@pytest.mark.parametrize(
    "comp",
    [
        {"t": "outputs_append", "id": "c1", "output": {"output_type": "stream"}},
        {"t": "stream_append", "id": "c1", "name": "stdout", "text": "hi"},
        {"t": "display_update", "display_id": "d", "output": {}},
        {"t": "exec_count", "id": "c1", "n": 3},
        {"t": "exec_state", "id": "c1", "state": "done"},
    ],
)
def test_server_components_from_a_client_are_rejected(comp: dict[str, Any]) -> None:
    reject([text_comp("x"), comp], "server_component")


@pytest.mark.parametrize(
    "comp",
    [
        {"t": "text", "id": "c1", "ops": [1], "extra": 1},
        {"t": "cell_delete", "id": "c1", "pos": "a"},
        {
            "t": "cell_insert",
            "id": "c1",
            "pos": "a",
            "cell": {"cell_type": "code", "source": "", "outputs": []},
        },
        {"t": "meta_set", "id": None, "key": "k", "value": 1, "v": 2},
        {"t": "nope", "id": "c1"},
        {"id": "c1"},
        {"t": 3, "id": "c1"},
        "text",
        [],
        None,
    ],
)
def test_unknown_keys_and_types_are_rejected(comp: Any) -> None:
    reject([comp])


@pytest.mark.parametrize("cell_id", ["", "a b", "a.b", "é", "x" * 65, 3, None, True, ["a"], "a\n"])
def test_bad_cell_ids_are_rejected(cell_id: Any) -> None:
    err = reject([{"t": "cell_delete", "id": cell_id}])
    assert err.message.startswith("op[0].id")


@pytest.mark.parametrize("pos", ["", "a-b", "a_b", "a b", "é", "0" * 1025, 5, None, "a\n"])
def test_bad_pos_is_rejected(pos: Any) -> None:
    reject([{"t": "cell_move", "id": "c1", "pos": pos}])


def test_pos_length_bounds() -> None:
    ok = decode_client(dumps(op_msg([{"t": "cell_move", "id": "c1", "pos": "z" * 1024}])))
    assert isinstance(ok, OpMessage)
    reject([{"t": "cell_move", "id": "c1", "pos": "z" * 1025}])


@pytest.mark.parametrize(
    "ops",
    [
        [-1],
        [{"d": 0}],
        [{"d": -2}],
        [{"d": True}],
        [{"d": 1.0}],
        [{"d": 1, "x": 2}],
        [{}],
        [True],
        [1.5],
        [None],
        [[1]],
        [2**53 + 1],
    ],
)
def test_bad_text_splices_are_rejected(ops: list[Any]) -> None:
    err = reject([text_comp(*ops)])
    assert err.message.startswith("op[0].ops")


def test_counts_on_ops_are_bounded() -> None:
    limits = DEFAULT_LIMITS
    reject([text_comp("x")] * (limits.max_components_per_op + 1), "op_too_large")
    reject([text_comp(*(["a", 1] * (limits.max_text_ops_per_component // 2 + 1)))], "op_too_large")


def test_error_in_a_later_component_names_it() -> None:
    err = reject([text_comp("x"), text_comp(1, {"d": 0})])
    assert err.message.startswith("op[1].ops[1]")


# Lone surrogates ----------------------------------------------------------------------------


def test_orjson_refuses_lone_surrogates() -> None:
    # What this module relies on: orjson never yields a str holding a lone surrogate.
    for data in (b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\ud800"', b'"x\\udfff"'):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(data)
    assert orjson.loads(b'"\\ud83d\\ude00"') == "\U0001f600"  # a proper pair is fine


@pytest.mark.parametrize("escape", ["\\ud800", "\\udc00", "\\udbff\\udbff", "a\\udfffb", "\\ude00\\ud83d"])
def test_lone_surrogate_in_an_op_is_rejected_with_seq(escape: str) -> None:
    data = '{"type":"op","seq":9,"base":0,"op":[{"t":"text","id":"c1","ops":[1,"' + escape + '"]}]}'
    err = fails(data.encode(), "lone_surrogate", None, 9)
    assert err.message.startswith("op[0].ops[1]")


def test_lone_surrogates_elsewhere_close() -> None:
    fails(b'"\\ud800"', "lone_surrogate")
    fails(b'{"type":"\\ud800"}', "lone_surrogate")
    fails(b'{"type":"presence","cursor":{"cell":"\\ud800","anchor":0,"head":0}}', "lone_surrogate")
    # the op envelope is not readable (seq is bad), so nothing to reject: close
    fails(b'{"type":"op","seq":0,"base":0,"op":[{"t":"text","id":"c1","ops":["\\ud800"]}]}', "lone_surrogate")
    # a key holding a surrogate
    fails(b'{"type":"ping","\\ud800":1}', "lone_surrogate")


def test_lone_surrogate_in_metadata_and_source() -> None:
    meta = (
        b'{"type":"op","seq":4,"base":0,"op":[{"t":"meta_set","id":null,"key":"k",'
        b'"value":{"a":["\\udc00"]}}]}'
    )
    err = fails(meta, "lone_surrogate", None, 4)
    assert err.message.startswith("op[0].value.a[0]")
    src = (
        b'{"type":"op","seq":5,"base":0,"op":[{"t":"cell_insert","id":"n","pos":"a",'
        b'"cell":{"cell_type":"code","source":"\\ud801"}}]}'
    )
    fails(src, "lone_surrogate", None, 5)


def test_lone_surrogate_in_a_python_str_message() -> None:
    data = '{"type":"op","seq":3,"base":0,"op":[{"t":"text","id":"c1","ops":["\ud800"]}]}'
    fails(data, "lone_surrogate", None, 3)
    fails('{"type":"\udc00"}', "lone_surrogate")


def test_surrogate_and_bad_json_is_malformed() -> None:
    fails(b'{"type":"op","seq":1,"base":0,"op":["\\ud800"', "malformed_json")
    fails(b'["\\ud800", NaN]', "malformed_json")
    fails(b'["\\ud800", 1e400]', "malformed_json")


def test_error_messages_never_echo_raw_surrogates() -> None:
    err = fails('{"type":"ping","\udc00x":1}', "lone_surrogate")
    err.message.encode("utf-8")
