"""`Idempotency-Key` on PUT content, revert, copy and copies; bulk copies answer per target."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.server_process import ServerProcess
from tests.test_sync import head_sources, make_notebook, token
from tests.wsclient import SyncClient


def ipynb(*sources: str) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"id": f"s{i}", "cell_type": "markdown", "metadata": {}, "source": src}
            for i, src in enumerate(sources)
        ],
    }


async def version(http: httpx.AsyncClient, notebook_id: str) -> int:
    return int((await http.get(f"/api/v1/notebooks/{notebook_id}")).json()["version"])


async def test_a_repeated_key_gets_the_first_answer_and_changes_nothing(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=1)
    put = {"notebook": ipynb("first")}
    first = await http.put("/api/v1/notebooks/nb/content", json=put, headers={"Idempotency-Key": "put-1"})
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    # A revert that is retried after someone else edited must not apply twice.
    reverted = await http.post(
        "/api/v1/notebooks/nb/revert", json={"version": 0}, headers={"Idempotency-Key": "rv"}
    )
    assert reverted.status_code == 200
    await http.put("/api/v1/notebooks/nb/content", json={"notebook": ipynb("edited later")})
    head = await version(http, "nb")
    for restart in (False, True):
        if restart:  # kept in the store
            assert server.stop() == 0
            server.start()
        again = await http.put("/api/v1/notebooks/nb/content", json=put, headers={"Idempotency-Key": "put-1"})
        assert (again.status_code, again.json()) == (200, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
        retry = await http.post(
            "/api/v1/notebooks/nb/revert", json={"version": 0}, headers={"Idempotency-Key": "rv"}
        )
        assert (retry.status_code, retry.json()) == (200, reverted.json())
        assert await version(http, "nb") == head
        assert (await head_sources(http, "nb")) == {"s0": "edited later"}
    # The same key for another request is refused.
    other = await http.put(
        "/api/v1/notebooks/nb/content", json={"notebook": ipynb("x")}, headers={"Idempotency-Key": "put-1"}
    )
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    # An error answer is an answer too: the repeat gets it, even once the request would succeed.
    stale = {"notebook": ipynb("y"), "base_version": 0}
    conflict = await http.put("/api/v1/notebooks/nb/content", json=stale, headers={"Idempotency-Key": "c"})
    assert conflict.status_code == 409
    again = await http.put("/api/v1/notebooks/nb/content", json=stale, headers={"Idempotency-Key": "c"})
    assert (again.status_code, again.json()) == (409, conflict.json())
    bad = await http.put("/api/v1/notebooks/nb/content", json=put, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


async def test_copies_with_a_key_are_made_once(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "src", cells=1)
    first = await http.post(
        "/api/v1/notebooks/src/copy", json={"id": "c1"}, headers={"Idempotency-Key": "k1"}
    )
    again = await http.post(
        "/api/v1/notebooks/src/copy", json={"id": "c1"}, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    targets = {"targets": [{"id": "b1"}, {"id": "b2"}]}
    first = await http.post("/api/v1/notebooks/src/copies", json=targets, headers={"Idempotency-Key": "k2"})
    again = await http.post("/api/v1/notebooks/src/copies", json=targets, headers={"Idempotency-Key": "k2"})
    assert [r["status"] for r in again.json()["results"]] == ["created", "created"]
    assert first.json() == again.json()
    plain = await http.post("/api/v1/notebooks/src/copies", json=targets)
    assert [r["status"] for r in plain.json()["results"]] == ["exists", "exists"]


async def test_bulk_copies_share_one_source_version(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "src", cells=1)
    targets = [{"id": f"student{i:03d}"} for i in range(120)] + [{"id": "bad id"}, {"id": "x" * 65}]
    async with SyncClient.connect(server.ws_url("src", await token(http, "src"))) as editor:
        await editor.start()
        stop = trio.Event()

        async def type_while_copying() -> None:
            while not stop.is_set():
                await editor.submit([{"t": "text", "id": "s0", "ops": ["x"]}])
                await editor.sync_until(editor.version)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(type_while_copying)
            await trio.sleep(0.2)
            resp = await http.post("/api/v1/notebooks/src/copies", json={"targets": targets})
            stop.set()
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["created"] * 120 + ["error", "error"]
    assert {r["error"]["code"] for r in results[120:]} == {"invalid_id"}
    contents = {(await head_sources(http, t["id"]))["s0"] for t in targets[:120]}
    assert len(contents) == 1, f"copies of {len(contents)} different source versions"
