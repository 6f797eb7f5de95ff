"""encode and the broadcast fast paths: exact contract shapes, type first, byte-identical."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from protocol import (
    Ack,
    Error,
    ExecuteMessage,
    InterruptMessage,
    Kernel,
    OpMessage,
    Ops,
    PingMessage,
    Pong,
    Presence,
    PresenceMessage,
    ProtocolError,
    Reject,
    ServerMessage,
    Welcome,
    decode_client,
    encode,
    encode_client,
    encode_op_entry,
    ops_frame_payload,
    welcome_payload_with_doc,
    welcome_payload_with_ops,
)

USER = {"id": "u1", "name": "Ada", "color": "#f00"}
DOC = {
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
    "cells": [{"id": "c1", "pos": "V", "cell_type": "code", "source": "1+1", "metadata": {}}],
}
ENTRY = {"v": 3, "client": "k1", "seq": 2, "user": "u1", "op": [{"t": "text", "id": "c1", "ops": [1, "é"]}]}


def parsed(msg: ServerMessage) -> Any:
    data = encode(msg)
    assert isinstance(data, bytes)
    value = json.loads(data)
    assert next(iter(value)) == "type"
    assert data.startswith(b'{"type":')
    return value


@pytest.mark.parametrize(
    "msg, expected",
    [
        (
            Welcome("k1", "editor", USER, 7, notebook=DOC),
            {
                "type": "welcome",
                "client": "k1",
                "role": "editor",
                "user": USER,
                "version": 7,
                "notebook": DOC,
            },
        ),
        (
            Welcome("k1", "viewer", USER, 7, ops=[ENTRY]),
            {"type": "welcome", "client": "k1", "role": "viewer", "user": USER, "version": 7, "ops": [ENTRY]},
        ),
        (
            Welcome("k1", "viewer", USER, 7, ops=[]),
            {"type": "welcome", "client": "k1", "role": "viewer", "user": USER, "version": 7, "ops": []},
        ),
        (Ops([ENTRY, {**ENTRY, "v": 4}]), {"type": "ops", "ops": [ENTRY, {**ENTRY, "v": 4}]}),
        (Ack(2, 3), {"type": "ack", "seq": 2, "v": 3}),
        (
            Reject(5, "invalid_op", "op[0].id: bad"),
            {"type": "reject", "seq": 5, "error": {"code": "invalid_op", "message": "op[0].id: bad"}},
        ),
        (
            Presence(3, [{"client": "k1", "user": USER, "cursor": None, "v": 7}]),
            {
                "type": "presence",
                "viewers": 3,
                "editors": [{"client": "k1", "user": USER, "cursor": None, "v": 7}],
            },
        ),
        (
            Kernel("busy", ["c1", "c2"], "python3", "c0"),
            {"type": "kernel", "state": "busy", "name": "python3", "queue": ["c1", "c2"], "running": "c0"},
        ),
        (Pong(), {"type": "pong"}),
        (
            Error("message_too_large", "too big"),
            {"type": "error", "code": "message_too_large", "message": "too big"},
        ),
    ],
)
def test_encode_shapes(msg: ServerMessage, expected: dict[str, Any]) -> None:
    value = parsed(msg)
    assert value == expected
    assert list(value) == list(expected)


def test_welcome_needs_exactly_one_of_notebook_and_ops() -> None:
    with pytest.raises(ValueError):
        Welcome("k", "editor", USER, 1)
    with pytest.raises(ValueError):
        Welcome("k", "editor", USER, 1, notebook=DOC, ops=[])


def test_op_entry_order_and_extra_keys() -> None:
    shuffled = {"op": ENTRY["op"], "time": 123, "user": "u1", "seq": 2, "client": "k1", "v": 3}
    data = encode_op_entry(shuffled)
    assert list(json.loads(data)) == ["v", "client", "seq", "user", "op"]
    assert data == encode_op_entry(ENTRY) == orjson.dumps(ENTRY)
    with pytest.raises(KeyError):
        encode_op_entry({"v": 1})


def test_fast_paths_match_an_independent_encoding_byte_for_byte() -> None:
    """The broadcast fast paths against plain `orjson.dumps` of the message dict (not `encode`,
    which is built on the same fast paths and so could not disagree with them)."""
    entries = [
        ENTRY,
        {**ENTRY, "v": 4, "seq": 3},
        {**ENTRY, "v": 5, "op": [{"t": "text", "id": "c1", "ops": ['😀\n"x"']}]},
    ]
    encoded = [encode_op_entry(e) for e in entries]
    assert encoded == [orjson.dumps(e) for e in entries]
    assert ops_frame_payload(encoded) == orjson.dumps({"type": "ops", "ops": entries})
    assert ops_frame_payload([]) == orjson.dumps({"type": "ops", "ops": []})
    for user in (USER, {"id": 'é"\\', "name": "学生 🎓"}):
        welcome_doc = {"type": "welcome", "client": "k1", "role": "editor", "user": user, "version": 9}
        assert welcome_payload_with_doc("k1", "editor", user, 9, orjson.dumps(DOC)) == orjson.dumps(
            {**welcome_doc, "notebook": DOC}
        )
        welcome_ops = {"type": "welcome", "client": "k1", "role": "viewer", "user": user, "version": 9}
        assert welcome_payload_with_ops("k1", "viewer", user, 9, encoded) == orjson.dumps(
            {**welcome_ops, "ops": entries}
        )
        assert welcome_payload_with_ops("k1", "viewer", user, 9, []) == orjson.dumps(
            {**welcome_ops, "ops": []}
        )
    # And `encode` agrees with the independent encoding too.
    assert encode(Ops(entries)) == orjson.dumps({"type": "ops", "ops": entries})
    assert encode(Ack(2, 3)) == orjson.dumps({"type": "ack", "seq": 2, "v": 3})


def test_reject_and_error_from_protocol_errors() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client(b'{"type":"op","seq":4,"base":0,"op":[]}')
    assert parsed(Reject.from_error(info.value)) == {
        "type": "reject",
        "seq": 4,
        "error": {"code": "invalid_op", "message": info.value.message},
    }
    with pytest.raises(ProtocolError) as info:
        decode_client(b"nope")
    assert parsed(Error.from_error(info.value))["code"] == "malformed_json"
    with pytest.raises(ValueError):
        Reject.from_error(info.value)


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(TypeError):
        encode({"type": "pong"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(PingMessage())  # type: ignore[arg-type]


def test_client_messages_round_trip() -> None:
    for msg in (
        OpMessage(3, 0, [{"t": "cell_delete", "id": "a"}]),
        PresenceMessage({"cell": "a", "anchor": 1, "head": 1}),
        PresenceMessage(None),
        ExecuteMessage(["a"]),
        InterruptMessage(),
        PingMessage(),
    ):
        data = encode_client(msg)
        assert data.startswith(b'{"type":')
        assert decode_client(data) == msg
