"""--notebook-max-bytes on the real server: 413 on upload, PUT and copy; ops rejected with
`notebook_too_large`, the notebook intact; joining a notebook far above the old 8 MiB
per-connection queue works for every viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.limits_support import error_code, running
from tests.server_process import ServerProcess
from tests.wsclient import SyncClient

KiB = 1024
MiB = 1024 * KiB


def notebook(*sources: str) -> dict[str, Any]:
    cells = [
        {"id": f"c{i}", "cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
        | {"source": s}
        for i, s in enumerate(sources)
    ]
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


async def token(api: httpx.AsyncClient, nid: str, role: str = "editor", user: str = "u1") -> str:
    body = {"notebook": nid, "user": {"id": user, "name": user}, "role": role}
    r = await api.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def create(api: httpx.Client, nid: str, *sources: str) -> httpx.Response:
    return api.post("/api/v1/notebooks", json={"id": nid, "notebook": notebook(*sources)})


async def acreate(api: httpx.AsyncClient, nid: str, *sources: str) -> httpx.Response:
    return await api.post("/api/v1/notebooks", json={"id": nid, "notebook": notebook(*sources)})


def test_upload_put_and_copy_over_the_cap_are_413(tmp_path: Path) -> None:
    with running(tmp_path, "--notebook-max-bytes", "64KiB") as server:
        api = httpx.Client(base_url=server.base_url, headers=server.headers)
        r = create(api, "big", "x" * 70 * KiB)
        assert r.status_code == 413 and error_code(r.content) == "notebook_too_large"
        assert api.get("/api/v1/notebooks/big").status_code == 404
        assert create(api, "nb", "a" * 40 * KiB).status_code == 201
        bigger = notebook("a" * 40 * KiB, "b" * 40 * KiB)
        r = api.put("/api/v1/notebooks/nb/content", json={"notebook": bigger})
        assert r.status_code == 413 and error_code(r.content) == "notebook_too_large"
        content = api.get("/api/v1/notebooks/nb/content")
        assert [c["source"] for c in content.json()["cells"]] == ["a" * 40 * KiB]  # intact
        assert content.headers["x-agora-version"] == "0"
        assert api.post("/api/v1/notebooks/nb/copy", json={"id": "nb2"}).status_code == 201
        api.close()
    # the same data dir under a lower cap: copying the (now too large) notebook is refused
    with running(tmp_path, "--notebook-max-bytes", "16KiB") as server:
        api = httpx.Client(base_url=server.base_url, headers=server.headers)
        r = api.post("/api/v1/notebooks/nb/copy", json={"id": "nb3"})
        assert r.status_code == 413 and error_code(r.content) == "notebook_too_large"
        assert api.get("/api/v1/notebooks/nb3").status_code == 404
        api.close()


async def test_an_op_past_the_cap_is_rejected_and_the_notebook_stays_intact(tmp_path: Path) -> None:
    with running(tmp_path, "--notebook-max-bytes", "256KiB") as server:
        api = httpx.AsyncClient(base_url=server.base_url, headers=server.headers)
        assert (await acreate(api, "nb", "")).status_code == 201
        tok = await token(api, "nb")
        async with SyncClient.connect(server.ws_url("nb", tok)) as editor:
            await editor.start()
            for _ in range(2):  # 2 x 100 KiB fit
                await editor.submit([{"t": "text", "id": "c0", "ops": ["y" * 100 * KiB]}])
                await editor.sync_until(editor.version)
            assert editor.version == 2
            grow = [{"t": "text", "id": "c0", "ops": ["z" * 100 * KiB]}]
            await editor.send({"type": "op", "seq": 3, "base": 2, "op": grow})
            reject = await editor.until("reject")
            assert reject["seq"] == 3 and reject["error"]["code"] == "notebook_too_large"
            # an op that shrinks the notebook is still accepted on the same connection
            shrink = [{"t": "text", "id": "c0", "ops": [{"d": 10}]}]
            await editor.send({"type": "op", "seq": 3, "base": 2, "op": shrink})
            while editor.version < 3:
                await editor.pump()
        content = await api.get("/api/v1/notebooks/nb/content")
        assert content.headers["x-agora-version"] == "3"
        assert content.json()["cells"][0]["source"] == "y" * (200 * KiB - 10)
        await api.aclose()


async def _join(server: ServerProcess, tok: str) -> dict[str, Any]:
    async with SyncClient.connect(server.ws_url("big", tok)) as viewer:
        return await viewer.start()


async def test_every_viewer_can_join_a_notebook_far_above_the_old_queue_limit(tmp_path: Path) -> None:
    """12 MiB: before, every viewer was cut with 4408 before its welcome (8 MiB private queue)."""
    sources = ["x" * (MiB - 100) for _ in range(12)]
    with running(tmp_path) as server:
        api = httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60)
        assert (await acreate(api, "big", *sources)).status_code == 201
        tok = await token(api, "big", "viewer")
        welcomes: list[dict[str, Any]] = []

        async def join() -> None:
            welcomes.append(await _join(server, tok))

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(join)
        assert len(welcomes) == 8
        for welcome in welcomes:
            assert [c["source"] for c in welcome["notebook"]["cells"]] == sources
        await api.aclose()


async def test_joiners_of_a_large_notebook_under_edit_converge(tmp_path: Path) -> None:
    """Joins served from a DOC encoded in the background start at its version and get every
    op after it: each viewer ends with exactly the editor's document."""
    with running(tmp_path) as server:
        api = httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60)
        assert (await acreate(api, "big", *("x" * (MiB // 2) for _ in range(4)))).status_code == 201
        viewer_tok, editor_tok = await token(api, "big", "viewer"), await token(api, "big", "editor")
        async with SyncClient.connect(server.ws_url("big", editor_tok)) as editor:
            await editor.start()
            viewers: list[SyncClient] = []

            async def edit() -> None:
                for i in range(60):
                    await editor.submit([{"t": "text", "id": "c1", "ops": [i, "e"]}])
                    await editor.sync_until(editor.version)

            async def join(i: int) -> None:
                await trio.sleep(i * 0.05)
                async with SyncClient.connect(server.ws_url("big", viewer_tok)) as viewer:
                    await viewer.start()
                    viewers.append(viewer)
                    await editor_done.wait()
                    await viewer.sync_until(final_version[0], timeout=30)
                    assert viewer.notebook == editor.notebook

            editor_done = trio.Event()
            final_version = [0]
            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(join, i)
                await edit()
                final_version[0] = editor.version
                editor_done.set()
            assert len(viewers) == 6
        await api.aclose()
