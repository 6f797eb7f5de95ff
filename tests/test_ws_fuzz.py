"""Fuzzing the sync endpoint: thousands of mangled messages against the real server.

A seeded generator mutates valid client messages (wrong types, missing and extra fields, huge
and negative numbers, bad ids, broken JSON, truncation, unicode edge cases) and sends them over
real WebSockets, reconnecting whenever the server closes the connection. Meanwhile a bystander
editor keeps editing. Every message must get its answer (its op back, an ack or a reject with
its seq, a pong, an error) or an error + close, as the protocol's own decoder predicts for it; a
presence update (which has no answer) is followed by a ping whose pong must come. The server
must stay healthy, the bystander must converge, and the log must hold no traceback.
"""

from __future__ import annotations

import copy
import os
import random
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed

from protocol import OpMessage, PingMessage, PresenceMessage, ProtocolError, decode_client
from tests.server_process import ServerProcess
from tests.test_sync import head_sources, make_notebook, sources, token
from tests.wsclient import SyncClient

MESSAGES = int(os.environ.get("AGORA_WS_FUZZ_MESSAGES", "1500"))

VALID: list[dict[str, Any]] = [
    {"type": "op", "seq": 1, "base": 0, "op": [{"t": "text", "id": "s0", "ops": [1, "x", {"d": 1}]}]},
    {
        "type": "op",
        "seq": 1,
        "base": 0,
        "op": [{"t": "cell_insert", "id": "n1", "pos": "m", "cell": {"cell_type": "code", "source": "y"}}],
    },
    {
        "type": "op",
        "seq": 1,
        "base": 0,
        "op": [{"t": "meta_set", "id": None, "key": "k", "value": {"a": [1]}}],
    },
    {"type": "op", "seq": 1, "base": 0, "op": [{"t": "cell_move", "id": "s1", "pos": "zz"}]},
    {
        "type": "op",
        "seq": 1,
        "base": 0,
        "op": [{"t": "cell_delete", "id": "s1"}, {"t": "cell_restore", "id": "s1"}],
    },
    {"type": "op", "seq": 1, "base": 0, "op": [{"t": "cell_type", "id": "s0", "value": "raw"}]},
    {"type": "op", "seq": 1, "base": 0, "op": [{"t": "outputs_clear", "id": "s0"}]},
    {"type": "presence", "cursor": {"cell": "s0", "anchor": 0, "head": 2}},
    {"type": "presence", "cursor": None},
    {"type": "ping"},
    {"type": "execute", "cells": ["s0"]},
    {"type": "interrupt"},
]

WEIRD: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    2**53,
    2**63 - 1,
    -(2**62),
    1.5,
    float("inf"),
    "",
    "x" * 2000,
    "é",
    "🎉",
    "\u200f",
    "s0",
    [],
    {},
    [None],
    {"d": -1},
    {"d": 0},
    {"d": 2**40},
    [1, 2, 3],
    "../../etc",
    "a\nb",
]


def mutate(rng: random.Random, message: dict[str, Any]) -> str | bytes:
    """One mangled variant of `message`, as the text (or bytes) to send."""
    m = copy.deepcopy(message)
    kind = rng.randrange(10)
    if kind == 0:  # replace a random (possibly nested) value
        target: Any = m
        for _ in range(rng.randrange(4)):
            if isinstance(target, dict) and target:
                key = rng.choice(list(target))
                if isinstance(target[key], dict | list) and target[key]:
                    target = target[key]
            elif isinstance(target, list) and target and isinstance(target[0], dict | list):
                target = rng.choice([t for t in target if isinstance(t, dict | list)] or [target])
        if isinstance(target, dict) and target:
            target[rng.choice(list(target))] = rng.choice(WEIRD)
        elif isinstance(target, list) and target:
            target[rng.randrange(len(target))] = rng.choice(WEIRD)
    elif kind == 1 and m:
        m.pop(rng.choice(list(m)))
    elif kind == 2:
        m[rng.choice(["extra", "type", "seq", "op", "t"])] = rng.choice(WEIRD)
    elif kind == 3:
        text = orjson.dumps(m).decode()
        return text[: rng.randrange(len(text) + 1)]
    elif kind == 4:
        data = bytearray(orjson.dumps(m))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    elif kind == 5:
        return orjson.dumps(m).decode().replace('"s0"', '"\\ud83d"', 1)
    elif kind == 6 and m.get("type") == "op":
        m["op"] = m["op"] * rng.choice([0, 2, 50])
    elif kind == 7:
        return orjson.dumps([m, m]).decode()
    elif kind == 8:  # numbers no 64-bit integer or double can hold
        return orjson.dumps(m).decode().replace("1", rng.choice(["1e400", "9" * 40, "-0", "1.0"]), 1)
    return orjson.dumps(m).decode()


def expected_answer(payload: str | bytes) -> tuple[str, int | None]:
    """What the server must answer `payload` with: ("close", None), ("reject", seq),
    ("op", seq) (its ops entry, an ack or a reject), ("pong", None), ("quiet", None) or
    ("kernel", None)."""
    if isinstance(payload, bytes):
        return "close", None  # a binary frame
    try:
        message = decode_client(payload)
    except ProtocolError as exc:
        if exc.close_code is None and exc.seq is not None:
            return "reject", exc.seq
        return "close", None
    if isinstance(message, OpMessage):
        return "op", message.seq
    if isinstance(message, PingMessage):
        return "pong", None
    if isinstance(message, PresenceMessage):
        return "quiet", None
    return "kernel", None  # execute / interrupt / input_reply: kernel frames, maybe an error


async def await_answer(fuzzer: SyncClient, kind: str, seq: int | None) -> str:
    """Read until the answer of the message just sent; returns what it was. Raises
    `ConnectionClosed` after an error frame when the server closed (only allowed for "close")."""
    errors_allowed = kind == "kernel"
    if kind in ("quiet", "kernel"):  # no answer of its own: the pong of a ping sent after it
        await fuzzer.send({"type": "ping"})
        kind = "pong"
    saw_error = False
    with trio.fail_after(10):
        while True:
            try:
                reply = await fuzzer.recv()
            except ConnectionClosed:
                assert kind == "close" and saw_error, f"closed while waiting for {kind} {seq}"
                raise
            rtype = reply["type"]
            assert rtype in ("ops", "reject", "error", "ack", "pong", "kernel"), reply
            if rtype == "error":
                saw_error = True
                if errors_allowed:
                    continue
                assert kind == "close", f"unexpected error {reply} while waiting for {kind} {seq}"
            elif rtype == "pong" and kind == "pong":
                return "pong"
            elif rtype in ("reject", "ack") and kind in ("reject", "op") and reply["seq"] == seq:
                return rtype
            elif rtype == "ops" and kind == "op":
                mine = fuzzer.welcome["client"]
                if any(e["client"] == mine and e["seq"] == seq for e in reply["ops"]):
                    return "applied"


async def test_mangled_messages_never_hurt_the_server_or_others(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=2)
    editor_token = await token(http, "nb", user="fuzzer")
    rng = random.Random(int(os.environ.get("AGORA_WS_FUZZ_SEED", "20261125")))
    outcomes: dict[str, int] = {}
    async with SyncClient.connect(
        server.ws_url("nb", await token(http, "nb", user="bystander"))
    ) as bystander:
        await bystander.start()
        sent = 0
        while sent < MESSAGES:
            async with SyncClient.connect(server.ws_url("nb", editor_token)) as fuzzer:
                welcome = await fuzzer.start()
                assert welcome["type"] == "welcome"
                try:
                    while sent < MESSAGES:
                        payload = mutate(rng, rng.choice(VALID))
                        if isinstance(payload, bytes):
                            try:
                                payload = payload.decode()
                            except UnicodeDecodeError:
                                pass  # sent as a binary frame: a protocol violation too
                        kind, seq = expected_answer(payload)
                        await fuzzer.send(payload)
                        sent += 1
                        got = await await_answer(fuzzer, kind, seq)
                        outcomes[got] = outcomes.get(got, 0) + 1
                        if sent % 50 == 0:
                            assert bystander.notebook is not None
                            await bystander.submit([{"t": "text", "id": "s1", "ops": [f"[{sent}]"]}])
                except ConnectionClosed:
                    outcomes["closed"] = outcomes.get("closed", 0) + 1
            if sent % 25 == 0:
                assert (await http.get("/healthz")).status_code == 200
        await bystander.submit([{"t": "text", "id": "s1", "ops": ["end"]}])
        with trio.fail_after(10):
            while bystander.inflight is not None or bystander.pending:
                await bystander.pump()
        head = await http.get("/api/v1/notebooks/nb")
        await bystander.sync_until(head.json()["version"])
        assert sources(bystander) == await head_sources(http, "nb")
    assert outcomes["closed"] > 10, outcomes
    assert outcomes.get("reject", 0) > 50 and outcomes.get("applied", 0) > 10, outcomes
    assert "Traceback" not in server.log(), server.log()[-3000:]
    print(f"ws fuzz: {sent} messages, outcomes {outcomes}")
