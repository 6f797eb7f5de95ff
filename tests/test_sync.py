"""The live sync server end to end: real server process, real WebSocket clients (contract §4)."""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import open_websocket_url

from engine.auth.tokens import mint_token
from engine.ipynb import export_notebook
from engine.ot.model import notebook_to_doc, ordered_cells
from tests.server_process import ServerProcess
from tests.wsclient import SyncClient, close_reason

INSERT_C1 = {"t": "cell_insert", "id": "c1", "pos": "m", "cell": {"cell_type": "code", "source": "hello"}}


async def make_notebook(http: httpx.AsyncClient, notebook_id: str, cells: int = 0) -> None:
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"id": f"s{i}", "cell_type": "markdown", "metadata": {}, "source": f"cell {i}"}
            for i in range(cells)
        ],
    }
    r = await http.post("/api/v1/notebooks", json={"id": notebook_id, "notebook": notebook})
    assert r.status_code == 201, r.text


async def token(http: httpx.AsyncClient, notebook_id: str, role: str = "editor", user: str = "u1") -> str:
    r = await http.post(
        "/api/v1/tokens",
        json={"notebook": notebook_id, "user": {"id": user, "name": user.upper()}, "role": role},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def head_sources(http: httpx.AsyncClient, notebook_id: str) -> dict[str, str]:
    r = await http.get(f"/api/v1/notebooks/{notebook_id}/content")
    assert r.status_code == 200
    return {c["id"]: "".join(c["source"]) for c in r.json()["cells"]}


def sources(client: SyncClient) -> dict[str, str]:
    assert client.notebook is not None
    return {c.id: c.source for c in ordered_cells(client.notebook)}


async def test_two_editors_typing_in_one_cell_converge(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb")
    url_a = server.ws_url("nb", await token(http, "nb", user="alice"))
    url_b = server.ws_url("nb", await token(http, "nb", user="bob"))
    async with SyncClient.connect(url_a) as a, SyncClient.connect(url_b) as b:
        await a.start()
        await b.start()
        await a.submit([INSERT_C1])
        await a.sync_until(1)
        await b.sync_until(1)
        rng = random.Random(7)
        for i in range(40):
            for who, mark in ((a, "A"), (b, "B")):
                assert who.notebook is not None
                source = who.notebook.cells["c1"].source
                # insert only between whole markers, so every marker stays intact and countable
                at = rng.choice([0, len(source), *[j + 1 for j, ch in enumerate(source) if ch == ">"]])
                ops: list[Any] = [at, f"<{mark}{i}>"] if at else [f"<{mark}{i}>"]
                await who.submit([{"t": "text", "id": "c1", "ops": ops}])
            # let frames interleave with pending ops on both sides
            with trio.move_on_after(0.01):
                await a.pump()
            with trio.move_on_after(0.01):
                await b.pump()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.sync_until, 81)
            nursery.start_soon(b.sync_until, 81)
        assert a.version == b.version == 81
        head = await head_sources(http, "nb")
        assert sources(a) == sources(b) == head
        for i in range(40):
            assert head["c1"].count(f"<A{i}>") == 1 and head["c1"].count(f"<B{i}>") == 1


async def test_fifty_viewers_get_identical_frames(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=3)
    viewer_url = server.ws_url("nb", await token(http, "nb", role="viewer", user="v"))
    editor_url = server.ws_url("nb", await token(http, "nb"))
    frames: dict[int, list[str]] = {}

    async def viewer(i: int, ready: trio.Event, done: trio.Event) -> None:
        async with open_websocket_url(viewer_url) as ws:
            welcome = orjson.loads(await ws.get_message())
            assert welcome["type"] == "welcome" and welcome["role"] == "viewer"
            ready.set()
            got: list[str] = []
            with trio.fail_after(20):
                while True:
                    text = await ws.get_message()
                    message = orjson.loads(text)
                    if message["type"] == "ops":
                        got.append(text)
                        if message["ops"][-1]["v"] >= 30:
                            break
            frames[i] = got
            done.set()

    async with trio.open_nursery() as nursery:
        readies = [trio.Event() for _ in range(50)]
        dones = [trio.Event() for _ in range(50)]
        for i in range(50):
            nursery.start_soon(viewer, i, readies[i], dones[i])
        for event in readies:
            await event.wait()
        async with SyncClient.connect(editor_url) as editor:
            await editor.start()
            for i in range(30):  # pipelined: the server must accept several ops in flight
                op = [{"t": "text", "id": "s0", "ops": [f"{i},"]}]
                await editor.send({"type": "op", "seq": i + 1, "base": i, "op": op})
                if i % 5 == 0:
                    await trio.sleep(0.03)
        for event in dones:
            await event.wait()
    reference = frames[0]
    assert all(f == reference for f in frames.values()), "every viewer gets the very same frames"
    versions = [e["v"] for text in reference for e in orjson.loads(text)["ops"]]
    assert versions == list(range(1, 31)), "in order, no gaps, no duplicates"
    assert len(reference) < 30, "ops were coalesced into fewer frames"


async def test_late_joiner_snapshot_matches(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=2)
    url = server.ws_url("nb", await token(http, "nb"))
    async with SyncClient.connect(url) as a:
        await a.start()
        await a.submit([INSERT_C1])
        await a.submit([{"t": "text", "id": "c1", "ops": [5, " 🎉 wörld"]}])
        await a.submit([{"t": "cell_delete", "id": "s1"}])
        await a.submit([{"t": "meta_set", "id": None, "key": "course", "value": "CS101"}])
        await a.sync_until(4)
        async with SyncClient.connect(url) as late:
            welcome = await late.start()
            assert welcome["version"] == 4
            assert a.notebook is not None and late.notebook is not None
            assert notebook_to_doc(late.notebook) == notebook_to_doc(a.notebook)
            deleted = [c for c in welcome["notebook"]["cells"] if c.get("deleted")]
            assert [c["id"] for c in deleted] == ["s1"]
    r = await http.get("/api/v1/notebooks/nb/content")
    assert r.headers["X-Agora-Version"] == "4"
    assert late.notebook is not None
    assert r.json()["cells"] == export_notebook(late.notebook)["cells"]


async def test_resume_with_since_gets_exactly_the_missed_ops(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=1)
    url = server.ws_url("nb", await token(http, "nb"))
    async with SyncClient.connect(url) as a:
        await a.start()
        for i in range(3):
            await a.submit([{"t": "text", "id": "s0", "ops": [f"{i}"]}])
        await a.sync_until(3)
        async with SyncClient.connect(url) as b:
            await b.start()
            for i in range(3, 10):
                await b.submit([{"t": "text", "id": "s0", "ops": [f"{i}"]}])
            await b.sync_until(10)
        async with SyncClient.connect(
            server.ws_url("nb", await token(http, "nb"), since=3, client=a.client)
        ) as a2:
            welcome = await a2.recv()
            assert welcome["type"] == "welcome" and welcome["version"] == 10 and welcome["client"] == a.client
            assert "notebook" not in welcome
            assert [e["v"] for e in welcome["ops"]] == list(range(4, 11))
            assert set(welcome["ops"][0]) == {"v", "client", "seq", "user", "op"}
        # a since outside the window (in the future) falls back to a snapshot
        async with SyncClient.connect(server.ws_url("nb", await token(http, "nb"), since=99)) as a3:
            welcome = await a3.start()
            assert "notebook" in welcome and welcome["version"] == 10


async def test_resubmitted_op_is_applied_once(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=1)
    tok = await token(http, "nb")
    op = {"type": "op", "seq": 1, "base": 0, "op": [{"t": "text", "id": "s0", "ops": ["X"]}]}
    async with SyncClient.connect(server.ws_url("nb", tok, client="dup")) as a:
        await a.start()
        await a.send(op)
        message = await a.recv()
        assert message["type"] == "ops" and message["ops"][0]["seq"] == 1
    async with SyncClient.connect(server.ws_url("nb", tok, client="dup", since=1)) as again:
        welcome = await again.recv()
        assert welcome["client"] == "dup" and welcome["version"] == 1
        await again.send(op)
        ack = await again.recv()
        assert ack == {"type": "ack", "seq": 1, "v": 1}
    assert (await head_sources(http, "nb"))["s0"] == "Xcell 0"


async def test_stalled_reader_is_cut_while_others_keep_receiving(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=1)
    viewer_token = await token(http, "nb", role="viewer")
    # A raw client with a tiny receive buffer that completes the handshake and then never reads.
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    path = f"/api/v1/notebooks/nb/ws?token={viewer_token}"
    stalled.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    try:
        async with (
            SyncClient.connect(server.ws_url("nb", await token(http, "nb"))) as editor,
            SyncClient.connect(server.ws_url("nb", viewer_token)) as healthy,
        ):
            await editor.start()
            await healthy.start()
            big = "x" * 8000
            for _ in range(150):
                await editor.submit([{"t": "text", "id": "s0", "ops": [big]}])
                await editor.sync_until(editor.seq, timeout=20)
                await trio.sleep(0.021)  # one frame per op
            await healthy.sync_until(150, timeout=20)
            assert healthy.version == 150
            r = await http.get("/metrics")
            cuts = [line for line in r.text.splitlines() if line.startswith("agora_slow_consumer_cuts_total")]
            assert cuts and float(cuts[0].split()[-1]) >= 1
        r = await http.get("/api/v1/notebooks/nb/sessions")
        assert r.json()["viewers"] == 0
    finally:
        stalled.close()


async def test_bad_input_gets_the_right_answer_and_harms_nobody(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=1)
    url = server.ws_url("nb", await token(http, "nb"))
    cases: list[tuple[str | bytes, int]] = [
        ("not json", 4400),
        ("[1,2]", 4400),
        ('{"type":"nope"}', 4400),
        ('{"type":"op","seq":"1","base":0,"op":[]}', 4400),
        ("x" * (1024 * 1024 + 10), 4413),
        (b"\x00\x01binary", 4400),
    ]
    async with SyncClient.connect(url) as bystander:
        await bystander.start()
        for payload, code in cases:
            async with SyncClient.connect(url) as bad:
                await bad.start()
                await bad.send(payload)
                error = await bad.recv()
                assert error["type"] == "error" and error["code"]
                assert await close_reason(bad) == code, payload[:40]
        async with SyncClient.connect(url) as rejected:
            await rejected.start()
            bad_ops = [
                '[{"t":"text","id":"s0","ops":[999,"x"]}]',  # past the end
                '[{"t":"text","id":"nope","ops":["x"]}]',  # missing cell
                '[{"t":"outputs_append","id":"s0","output":{}}]',  # server component
                '[{"t":"cell_move","id":"s0","pos":"not-alnum!"}]',
                '[{"t":"text","id":"s0","ops":["\\ud800"]}]',  # lone surrogate
                '[{"t":"text","id":"s0","ops":[-1]}]',
            ]
            for seq, op in enumerate(bad_ops, start=1):
                await rejected.send(f'{{"type":"op","seq":{seq},"base":0,"op":{op}}}')
                reply = await rejected.recv()
                assert reply["type"] == "reject" and reply["seq"] == seq, reply
        await bystander.submit([{"t": "text", "id": "s0", "ops": ["ok "]}])
        await bystander.sync_until(1)
    assert (await head_sources(http, "nb"))["s0"] == "ok cell 0"


def stored_incarnation(server: ServerProcess, notebook_id: str) -> str:
    """The notebook's incarnation as the file store keeps it."""
    info = orjson.loads((server.data_dir / "notebooks" / notebook_id / "info.json").read_bytes())
    return str(info["incarnation"])


async def test_roles_tokens_and_missing_notebooks(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=1)
    await make_notebook(http, "other")
    async with SyncClient.connect(server.ws_url("nb", await token(http, "nb", role="viewer"))) as viewer:
        await viewer.start()
        await viewer.send({"type": "ping"})
        assert (await viewer.recv())["type"] in ("pong", "presence")
        await viewer.send(
            {"type": "op", "seq": 1, "base": 0, "op": [{"t": "text", "id": "s0", "ops": ["x"]}]}
        )
        assert await close_reason(viewer) == 4403
    secret = server.secret.encode()
    user = {"id": "u1", "name": "U"}
    life = {"incarnation": stored_incarnation(server, "nb"), "issued": int(time.time() * 1000)}
    expired = mint_token(secret, "nb", user, "editor", int(time.time()) - 120, **life)
    forged = mint_token(b"not-the-secret", "nb", user, "editor", int(time.time()) + 600, **life)
    # Minted here with the same secret: accepted.
    minted_here = mint_token(secret, "nb", user, "viewer", int(time.time()) + 600, **life)
    async with SyncClient.connect(server.ws_url("nb", minted_here)) as accepted:
        assert (await accepted.start())["role"] == "viewer"
    for url, code in [
        (server.ws_url("nb", "garbage"), 4401),
        (server.ws_url("nb", expired), 4401),
        (server.ws_url("nb", forged), 4401),
        (server.ws_url("nb", await token(http, "other")), 4403),
        (server.ws_url("nb", await token(http, "nb"), client="bad id!"), 4400),
    ]:
        async with SyncClient.connect(url) as client:
            assert await close_reason(client) == code
    doomed_token = await token(http, "other")
    async with SyncClient.connect(server.ws_url("other", doomed_token)) as doomed:
        await doomed.start()
        r = await http.delete("/api/v1/notebooks/other")
        assert r.status_code == 204
        assert await close_reason(doomed) == 4404
    async with SyncClient.connect(server.ws_url("other", doomed_token)) as late:
        assert await close_reason(late) == 4404
    assert (await head_sources(http, "nb"))["s0"] == "cell 0"


async def test_presence_and_kick(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=1)
    async with (
        SyncClient.connect(server.ws_url("nb", await token(http, "nb", user="alice"))) as alice,
        SyncClient.connect(server.ws_url("nb", await token(http, "nb", user="bob"))) as bob,
        SyncClient.connect(server.ws_url("nb", await token(http, "nb", role="viewer", user="v"))) as viewer,
    ):
        for c in (alice, bob, viewer):
            await c.start()
        await alice.send({"type": "presence", "cursor": {"cell": "s0", "anchor": 2, "head": 4}})
        await bob.submit([{"t": "text", "id": "s0", "ops": ["ab"]}])
        with trio.fail_after(5):
            while True:
                presence = await viewer.until("presence")
                cursors = [e["cursor"] for e in presence["editors"] if e["user"]["id"] == "alice"]
                if (
                    presence["viewers"] == 1
                    and cursors
                    and cursors[0] == {"cell": "s0", "anchor": 4, "head": 6}
                ):
                    break
        assert {e["user"]["id"] for e in presence["editors"]} == {"alice", "bob"}
        r = await http.get("/api/v1/notebooks/nb/sessions")
        body = r.json()
        assert body["viewers"] == 1 and {e["user"]["id"] for e in body["editors"]} == {"alice", "bob"}
        r = await http.delete("/api/v1/notebooks/nb/sessions/bob")
        assert r.status_code == 204
        assert await close_reason(bob) == 4403
        await alice.submit([{"t": "text", "id": "s0", "ops": ["still here "]}])
        await alice.sync_until(2)


async def test_http_replace_is_seen_live(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=2)
    async with SyncClient.connect(server.ws_url("nb", await token(http, "nb"))) as editor:
        await editor.start()
        await editor.submit([{"t": "text", "id": "s0", "ops": [6, "!"]}])
        r = await http.get("/api/v1/notebooks/nb/content")
        new = r.json()
        new["cells"][1]["source"] = "replaced by the platform"
        r = await http.put("/api/v1/notebooks/nb/content", json={"notebook": new})
        assert r.status_code == 200, r.text
        await editor.sync_until(r.json()["version"])
        assert sources(editor) == await head_sources(http, "nb")
        assert sources(editor)["s1"] == "replaced by the platform"


async def test_graceful_shutdown_closes_with_1001(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=1)
    async with SyncClient.connect(server.ws_url("nb", await token(http, "nb"))) as editor:
        await editor.start()
        await editor.submit([{"t": "text", "id": "s0", "ops": ["kept "]}])
        await editor.sync_until(1)
        with trio.fail_after(30):
            code = await trio.to_thread.run_sync(server.stop)
        assert code == 0
        assert await close_reason(editor) == 1001
    server.start()
    assert (await head_sources(http, "nb"))["s0"] == "kept cell 0"
