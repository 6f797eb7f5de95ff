"""Nothing acknowledged is lost: kill -9 rounds against the real server, and a failing disk.

Each crash round: editors hammer one notebook over real WebSockets, recording every op the
server acknowledged (it came back in an `ops` frame); the server is killed with SIGKILL at a
random moment and restarted on the same data dir. Then every acknowledged op must be present
exactly once, and resubmitting each editor's unacknowledged op (same client id and seq) must
apply it at most once.
"""

from __future__ import annotations

import os
import random
import re
import socket
from pathlib import Path

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from engine.engine import Engine
from engine.errors import Unavailable
from engine.fanout import Peer
from engine.ipynb import import_notebook
from engine.room import Member
from engine.storage.memory import MemoryStorage
from tests.server_process import ServerProcess
from tests.test_sync import head_sources, make_notebook, token
from tests.wsclient import SyncClient

ROUNDS = int(os.environ.get("AGORA_CRASH_ROUNDS", "8"))
EDITORS = 4
MARK = re.compile(r"<(e\d+)-r(\d+)-(\d+)>")


async def _hammer(
    server: ServerProcess, tok: str, cell: str, name: str, round_no: int, acked: set[str], stop: trio.Event
) -> tuple[str, int, dict[int, str]]:
    """Edit until the connection dies; returns (client id, last seq sent, seq -> marker)."""
    client_id = f"{name}r{round_no}"
    sent: dict[int, str] = {}
    try:
        async with SyncClient.connect(server.ws_url("nb", tok, client=client_id)) as c:
            await c.start()
            while not stop.is_set():
                assert c.notebook is not None
                marker = f"<{name}-r{round_no}-{c.seq + 1}>"
                length = len(c.notebook.cells[cell].source)
                await c.submit([{"t": "text", "id": cell, "ops": [length, marker] if length else [marker]}])
                sent[c.seq] = marker
                with trio.move_on_after(5):  # until the ack, or the kill ends the connection
                    while c.inflight is not None:
                        await c.pump()
                if c.inflight is None:
                    acked.add(marker)
    except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError):
        pass
    return client_id, max(sent, default=0), sent


async def test_kill9_rounds_lose_no_acknowledged_op(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=EDITORS)
    tok = await token(http, "nb")
    rng = random.Random(int(os.environ.get("AGORA_CRASH_SEED", "1234")))
    acked: set[str] = set()
    total_checked = 0
    for round_no in range(ROUNDS):
        stop = trio.Event()
        results: list[tuple[str, int, dict[int, str]]] = []

        async def run(
            i: int,
            round_no: int = round_no,
            stop: trio.Event = stop,
            results: list[tuple[str, int, dict[int, str]]] = results,
        ) -> None:
            results.append(await _hammer(server, tok, f"s{i}", f"e{i}", round_no, acked, stop))

        async with trio.open_nursery() as nursery:
            for i in range(EDITORS):
                nursery.start_soon(run, i)
            await trio.sleep(rng.uniform(0.3, 1.5))
            server.kill9()
            stop.set()
        server.start()
        text = "".join((await head_sources(http, "nb")).values())
        present = MARK.findall(text)
        counts: dict[str, int] = {}
        for name, r, seq in present:
            key = f"<{name}-r{r}-{seq}>"
            counts[key] = counts.get(key, 0) + 1
        assert all(n == 1 for n in counts.values()), "no op is applied twice"
        missing = [m for m in acked if m not in counts]
        assert not missing, f"round {round_no}: acknowledged ops lost: {missing[:5]}"
        total_checked = len(acked)
        # Resubmit each editor's last op with its original client id and seq: applied at most once.
        version = int((await http.get("/api/v1/notebooks/nb")).json()["version"])
        for client_id, last_seq, sent in results:
            if not last_seq:
                continue
            marker = sent[last_seq]
            async with SyncClient.connect(server.ws_url("nb", tok, client=client_id, since=version)) as c:
                welcome = await c.recv()
                assert welcome["type"] == "welcome"
                cell = f"s{client_id[1]}"
                op = [{"t": "text", "id": cell, "ops": [marker]}]
                await c.send({"type": "op", "seq": last_seq, "base": welcome["version"], "op": op})
                reply = await c.recv()
                assert reply["type"] in ("ack", "ops", "reject"), reply
                if reply["type"] == "reject":
                    # seq gap: an earlier op of this client never reached the disk, so the
                    # client must resubmit from there; nothing was applied
                    assert reply["error"]["code"] == "bad_seq"
        text = "".join((await head_sources(http, "nb")).values())
        assert all(text.count(m) == 1 for m in acked), "resubmits applied at most once"
        for _client_id, last_seq, sent in results:
            if last_seq:
                assert text.count(sent[last_seq]) <= 1
    assert total_checked > 20, "the rounds acknowledged a meaningful number of ops"
    print(f"kill -9 rounds: {ROUNDS}, acknowledged ops checked: {total_checked}, lost: 0")


async def test_failing_disk_stops_the_room_and_acknowledges_nothing_more() -> None:
    storage = MemoryStorage()
    engine = Engine(storage)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_notebook(
            "nb", "nb", import_notebook({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})
        )
        room = await engine.room("nb")
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        peer = Peer(ours, room.config.fanout)
        member = Member(peer=peer, role="editor", client="c", user={"id": "u"})
        await room.join(member, None)
        insert = {"t": "cell_insert", "id": "a", "pos": "m", "cell": {"cell_type": "code", "source": ""}}
        await room.submit(member, 1, 0, [insert])
        await room.call(lambda doc: None)  # a full tick: the op is durable now
        storage.inject_append_failure("nb")
        await room.submit(member, 2, 1, [{"t": "text", "id": "a", "ops": ["lost"]}])
        with trio.fail_after(5):
            await room.closed.wait()
        theirs.setblocking(False)
        received = b""
        while True:
            try:
                chunk = theirs.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            received += chunk
        assert b'"v":1' in received and b'"v":2' not in received, "only the durable op was published"
        assert b"storage_failed" in received
        try:
            await room.call(lambda doc: None)
            raise AssertionError("a failed room must not answer")
        except Unavailable:
            pass
        notebook, version = await engine.content("nb")  # reopened from what is durable
        assert version == 1 and notebook.cells["a"].source == ""
        ours.close()
        theirs.close()
        nursery.cancel_scope.cancel()


async def test_idle_room_is_flushed_closed_and_reopened(tmp_path: Path) -> None:
    server = ServerProcess(data_dir=tmp_path / "data", extra_args=["--idle-timeout", "0.5"])
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
            await make_notebook(http, "nb", cells=1)
            async with SyncClient.connect(server.ws_url("nb", await token(http, "nb"))) as editor:
                await editor.start()
                for i in range(5):
                    await editor.submit([{"t": "text", "id": "s0", "ops": [f"{i}"]}])
                await editor.sync_until(5)
            notebook_dir = server.data_dir / "notebooks" / "nb"
            with trio.fail_after(10):  # the room closes 0.5 s after its last member left
                while orjson.loads((notebook_dir / "info.json").read_bytes())["version"] != 5:
                    await trio.sleep(0.1)
            assert list((notebook_dir / "snapshots").glob("*.snap")), "closing wrote a snapshot"
            assert (await http.get("/api/v1/notebooks/nb")).json()["version"] == 5
            assert (await head_sources(http, "nb"))["s0"] == "43210cell 0"
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()


async def test_history_and_old_versions_beyond_the_memory_window(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    """2,500 ops (more than the 2,000-op window): old history and versions come from the disk."""
    await make_notebook(http, "nb", cells=1)
    async with SyncClient.connect(server.ws_url("nb", await token(http, "nb"), client="w")) as writer:
        await writer.start()
        for seq in range(1, 2501):  # pipelined: each op made on top of the previous one
            await writer.send(
                {"type": "op", "seq": seq, "base": seq - 1, "op": [{"t": "text", "id": "s0", "ops": ["x"]}]}
            )
        with trio.fail_after(60):
            while writer.version < 2500:
                message = await writer.recv()
                if message["type"] == "ops":
                    writer.doc.version = message["ops"][-1]["v"]
                else:
                    raise AssertionError(message)
    for restart in (False, True):
        if restart:
            assert server.stop() == 0
            server.start()
        r = await http.get("/api/v1/notebooks/nb/history", params={"since": 10, "limit": 5})
        assert [item["v"] for item in r.json()["items"]] == [11, 12, 13, 14, 15]
        assert r.json()["items"][0]["client"] == "w" and r.json()["items"][0]["seq"] == 11
        r = await http.get("/api/v1/notebooks/nb/content", params={"version": 123})
        assert r.headers["X-Agora-Version"] == "123"
        assert "".join(r.json()["cells"][0]["source"]) == "x" * 123 + "cell 0"
        assert (await head_sources(http, "nb"))["s0"] == "x" * 2500 + "cell 0"
