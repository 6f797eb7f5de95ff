"""Kernel faults and limits through the real server: death, stubborn kernels, output floods,
server restarts (contract §2, §6 "kernel output is bounded", §8 output caps and pace)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from tests.kernelkit import cell, create, pump_until, pump_until_final, run_ws, text_of, token
from tests.server_process import ServerProcess
from tests.wsclient import SyncClient


@pytest.fixture(scope="module")
def kserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(data_dir=tmp_path_factory.mktemp("faults") / "data")
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            assert proc.stop() == 0
    assert "Traceback" not in proc.log(), proc.log()[-4000:]


@pytest.fixture
async def khttp(kserver: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kserver.base_url, headers=kserver.headers, timeout=60) as client:
        yield client


def kernel_pids(server_pid: int) -> set[int]:
    """The server's child processes that are kernels."""
    pids: set[int] = set()
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(int(pid))
            except FileNotFoundError:
                pass
    return pids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_kernel_death_ends_cells_and_the_next_execute_starts_a_fresh_kernel(
    kserver: ServerProcess, khttp: httpx.AsyncClient
) -> None:
    await create(
        khttp,
        "dies",
        {
            "set": "x = 5",
            "die": "import os\nos._exit(1)",
            "queued": "print('no')",
            "after": "print('x' in dir())",
        },
    )
    async with SyncClient.connect(
        kserver.ws_url("dies", await token(khttp, "dies", "viewer", "v"))
    ) as viewer:
        await viewer.start()
        r = await khttp.post("/api/v1/notebooks/dies/execute", json={"cells": ["set"], "wait": True})
        assert r.json()["results"][0]["state"] == "done"
        old = kernel_pids(kserver.proc.pid)  # type: ignore[union-attr]
        r = await khttp.post(
            "/api/v1/notebooks/dies/execute", json={"cells": ["die", "queued"], "wait": True}
        )
        results = {x["id"]: x for x in r.json()["results"]}
        assert results["die"]["state"] == "error" and results["queued"]["state"] == "aborted"
        assert "kernel died" in results["die"]["outputs"][-1]["text"]
        await pump_until(
            viewer, lambda: any(m["type"] == "kernel" and m["state"] == "dead" for m in viewer.received)
        )
        assert (await khttp.get("/api/v1/notebooks/dies/kernel")).json()["state"] == "dead"
        assert not any(alive(pid) for pid in old)  # reaped, no zombie
        r = await khttp.post("/api/v1/notebooks/dies/execute", json={"cells": ["after"], "wait": True})
        assert r.json()["results"][0]["outputs"][0]["text"] == "False\n"  # a fresh kernel
        assert (await khttp.get("/api/v1/notebooks/dies/kernel")).json()["state"] == "idle"
        # killed from outside while idle: dead at once, reaped, and the next run starts a new one
        (idle_kernel,) = kernel_pids(kserver.proc.pid) - old  # type: ignore[union-attr]
        os.kill(idle_kernel, signal.SIGKILL)
        with trio.fail_after(10):
            while (await khttp.get("/api/v1/notebooks/dies/kernel")).json()["state"] != "dead":
                await trio.sleep(0.05)
            while alive(idle_kernel):
                await trio.sleep(0.05)
        r = await khttp.post("/api/v1/notebooks/dies/execute", json={"cells": ["after"], "wait": True})
        assert r.json()["results"][0]["state"] == "done"


async def test_a_kernel_that_ignores_sigint_is_restarted(
    kserver: ServerProcess, khttp: httpx.AsyncClient
) -> None:
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ignoring', flush=True)\ntime.sleep(60)"
    )
    await create(khttp, "stub", {"stub": stubborn, "next": "print('next')", "later": "print('later')"})
    async with SyncClient.connect(kserver.ws_url("stub", await token(khttp, "stub"))) as ed:
        await ed.start()
        await ed.send({"type": "execute", "cells": ["stub", "next"]})
        await pump_until(ed, lambda: text_of(cell(ed, "stub")) == "ignoring\n")
        started = trio.current_time()
        await ed.send({"type": "interrupt"})
        await pump_until_final(ed, ["stub", "next"], timeout=30)
        assert 4.5 < trio.current_time() - started < 15
        assert cell(ed, "stub").exec_state == "error" and cell(ed, "next").exec_state == "aborted"
        assert "restarted" in text_of(cell(ed, "stub"), "stderr")

        def restarted() -> bool:
            states = [m["state"] for m in ed.received if m["type"] == "kernel"]
            return "starting" in states[1:] and states[-1] == "idle"

        await pump_until(ed, restarted)
        await run_ws(ed, ["later"])
        assert text_of(cell(ed, "later")) == "later\n"


async def test_output_flood_is_capped_paced_and_loses_nothing_before_the_cap(
    kserver: ServerProcess, khttp: httpx.AsyncClient
) -> None:
    plain = "for i in range(300_000):\n    print(i)"
    flushed = "for i in range(20_000):\n    print(i, flush=True)"
    await create(khttp, "flood", {"plain": plain, "flushed": flushed})
    async with (
        SyncClient.connect(kserver.ws_url("flood", await token(khttp, "flood"))) as ed,
        SyncClient.connect(kserver.ws_url("flood", await token(khttp, "flood", "viewer", "v"))) as viewer,
    ):
        await ed.start()
        await viewer.start()
        for cid in ("plain", "flushed"):
            frames_before, bytes_before = len(viewer.raw_frames), sum(len(f) for f in viewer.raw_frames)
            started = trio.current_time()
            await ed.send({"type": "execute", "cells": [cid]})
            await pump_until_final(viewer, [cid], timeout=120)
            took = trio.current_time() - started
            frames = len(viewer.raw_frames) - frames_before
            sent = sum(len(f) for f in viewer.raw_frames) - bytes_before
            assert cell(viewer, cid).exec_state == "done"
            assert sent < 1.5 * 1024 * 1024, sent  # ~1 MiB of text (JSON escapes its newlines)
            assert frames < 20 * took + 20, (frames, took)  # paced: ~10 commits/s, not per message
        plain_outputs = cell(viewer, "plain").outputs
        expected = "".join(f"{i}\n" for i in range(300_000))
        kept = plain_outputs[0]["text"]
        assert len(kept.encode()) <= 1024 * 1024 and expected.startswith(kept) and len(kept) > 1_000_000
        notices = [o for o in plain_outputs[1:] if "output truncated" in o.get("text", "")]
        assert len(plain_outputs) == 2 and len(notices) == 1
        assert f"{len(expected) - len(kept)} bytes" in notices[0]["text"]
        assert text_of(cell(viewer, "flushed")) == "".join(f"{i}\n" for i in range(20_000))  # none lost
    metrics = (await khttp.get("/metrics")).text
    assert "agora_kernel_output_bytes_total" in metrics and "agora_kernel_iopub_messages_total" in metrics


async def test_outputs_survive_a_restart_and_sigterm_leaves_no_kernel_behind(tmp_path: Path) -> None:
    server = ServerProcess(data_dir=tmp_path / "data")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http:
            await create(http, "keep", {"out": "print('kept')", "long": "import time\ntime.sleep(60)"})
            await create(http, "other", {"a": "y = 1"})
            r = await http.post("/api/v1/notebooks/keep/execute", json={"cells": ["out"], "wait": True})
            assert r.json()["results"][0]["state"] == "done"
            await http.post("/api/v1/notebooks/other/execute", json={"cells": "all", "wait": True})
            await http.post("/api/v1/notebooks/keep/execute", json={"cells": ["long"]})
            with trio.fail_after(20):
                while (await http.get("/api/v1/notebooks/keep/kernel")).json()["running"] != "long":
                    await trio.sleep(0.05)
        assert server.proc is not None
        pids = kernel_pids(server.proc.pid)
        assert len(pids) == 2
        assert server.stop() == 0
        assert not any(alive(pid) for pid in pids)
        server.start()
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http:
            content = (await http.get("/api/v1/notebooks/keep/content")).json()
            cells = {c["id"]: c for c in content["cells"]}
            assert cells["out"]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "kept\n"}]
            assert cells["out"]["execution_count"] == 1
            history = orjson.dumps((await http.get("/api/v1/notebooks/keep/history")).json()).decode()
            assert '"exec_state","id":"long","state":"error"' in history  # ended by the shutdown
            assert (await http.get("/api/v1/notebooks/keep")).json()["kernel"] == {
                "state": "none",
                "name": None,
            }
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    assert "Traceback" not in server.log(), server.log()[-4000:]


async def test_kernel_limit_and_idle_culling(tmp_path: Path) -> None:
    server = ServerProcess(
        data_dir=tmp_path / "data", extra_args=["--max-kernels", "1", "--kernel-idle-timeout", "2"]
    )
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as http:
            await create(http, "one", {"a": "print(1)"})
            await create(http, "two", {"a": "print(2)"})
            r = await http.post("/api/v1/notebooks/one/execute", json={"cells": "all", "wait": True})
            assert r.json()["results"][0]["state"] == "done"
            r = await http.post("/api/v1/notebooks/two/execute", json={"cells": "all"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "kernel_limit"
            async with SyncClient.connect(server.ws_url("two", await token(http, "two"))) as ed:
                await ed.start()
                await ed.send({"type": "execute", "cells": ["a"]})
                error = await ed.until("error")
                assert error["code"] == "kernel_limit"  # and the connection stays open
                await ed.send({"type": "ping"})
                await ed.until("pong")
            with trio.fail_after(20):  # idle for 2 s: shut down, and the slot is free again
                while (await http.get("/api/v1/notebooks/one/kernel")).json()["state"] != "none":
                    await trio.sleep(0.2)
            r = await http.post("/api/v1/notebooks/two/execute", json={"cells": "all", "wait": True})
            assert r.json()["results"][0]["outputs"][0]["text"] == "2\n"
    finally:
        if server.proc is not None and server.proc.poll() is None:
            assert server.stop() == 0
    assert "Traceback" not in server.log(), server.log()[-4000:]


async def test_input_whose_requester_left_ends_in_an_error(
    kserver: ServerProcess, khttp: httpx.AsyncClient
) -> None:
    await create(khttp, "left", {"ask": "x = input('? ')"})
    async with SyncClient.connect(kserver.ws_url("left", await token(khttp, "left"))) as ed:
        await ed.start()
        await ed.send({"type": "execute", "cells": ["ask"]})
        await ed.until("input_request", 30)
    with trio.fail_after(30):
        while True:
            content = (await khttp.get("/api/v1/notebooks/left/content")).json()
            (ask,) = content["cells"]
            if ask["outputs"] and any(o.get("ename") == "KeyboardInterrupt" for o in ask["outputs"]):
                break
            await trio.sleep(0.2)
    assert "has gone" in ask["outputs"][0]["text"]
    # The error output may be committed (by the flusher) just before the cell's end sets `idle`.
    with trio.fail_after(10):
        while (await khttp.get("/api/v1/notebooks/left/kernel")).json()["state"] != "idle":
            await trio.sleep(0.05)


async def test_deleting_a_notebook_stops_its_running_kernel(
    kserver: ServerProcess, khttp: httpx.AsyncClient
) -> None:
    await create(khttp, "gone", {"long": "import time\nprint('x', flush=True)\ntime.sleep(60)"})
    assert kserver.proc is not None
    before = kernel_pids(kserver.proc.pid)
    await khttp.post("/api/v1/notebooks/gone/execute", json={"cells": "all"})
    with trio.fail_after(20):
        while (await khttp.get("/api/v1/notebooks/gone/kernel")).json()["running"] != "long":
            await trio.sleep(0.05)
    (pid,) = kernel_pids(kserver.proc.pid) - before
    assert (await khttp.delete("/api/v1/notebooks/gone")).status_code == 204
    with trio.fail_after(20):
        while alive(pid):
            await trio.sleep(0.05)
    assert (await khttp.get("/api/v1/notebooks/gone/kernel")).status_code == 404
