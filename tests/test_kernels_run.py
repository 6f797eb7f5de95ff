"""Running cells on real ipykernel kernels through the real server (contract §2, §4, §5, §8).

One server for the module (kernels take ~0.5 s to start); each test uses its own notebook, so
its own kernel.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
import trio

from engine.kernels.terminal import render
from tests.kernelkit import cell, create, pump_until, pump_until_final, run_ws, text_of, token
from tests.server_process import ServerProcess, running_server
from tests.wsclient import SyncClient, close_reason

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d4944415478da63f8cfc0f01f0005000201a2a3c8c60000000049454e44ae426082"
    )
).decode()


@pytest.fixture(scope="module")
def kserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("kernels") / "data") as proc:
        yield proc


@pytest.fixture
async def http(kserver: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kserver.base_url, headers=kserver.headers, timeout=60) as client:
        yield client


async def test_print_error_aborts_rest_and_viewers_see_it_live(
    kserver: ServerProcess, http: httpx.AsyncClient
) -> None:
    await create(http, "basic", {"a": "print('hello')", "b": "1/0", "c": "print('never')"})
    async with (
        SyncClient.connect(kserver.ws_url("basic", await token(http, "basic"))) as ed,
        SyncClient.connect(kserver.ws_url("basic", await token(http, "basic", "viewer", "v"))) as viewer,
    ):
        await ed.start()
        await viewer.start()
        await run_ws(ed, ["a", "b", "c"])
        await pump_until_final(viewer, ["a", "b", "c"])
        for client in (ed, viewer):
            a, b, c = cell(client, "a"), cell(client, "b"), cell(client, "c")
            assert (a.exec_state, b.exec_state, c.exec_state) == ("done", "error", "aborted")
            assert text_of(a) == "hello\n" and a.execution_count == 1
            assert [o["output_type"] for o in b.outputs] == ["error"]
            assert b.outputs[0]["ename"] == "ZeroDivisionError" and b.outputs[0]["traceback"]
            assert c.outputs == [] and c.execution_count is None
        # every viewer got kernel frames: busy while running, idle at the end
        await pump_until(
            viewer, lambda: any(m["type"] == "kernel" and m["state"] == "idle" for m in viewer.received)
        )
        states = [m["state"] for m in viewer.received if m["type"] == "kernel"]
        assert "busy" in states
        kernel_frames = [m for m in viewer.received if m["type"] == "kernel"]
        assert all(set(m) == {"type", "state", "name", "queue", "running"} for m in kernel_frames)
    async with SyncClient.connect(
        kserver.ws_url("basic", await token(http, "basic", "viewer", "late"))
    ) as late:
        await late.start()  # a joining connection learns the kernel state right after its welcome
        assert await late.recv() == {
            "type": "kernel",
            "state": "idle",
            "name": "python3",
            "queue": [],
            "running": None,
        }
    r = await http.get("/api/v1/notebooks/basic")
    assert r.json()["kernel"] == {"state": "idle", "name": "python3"}
    r = await http.get("/api/v1/notebooks/basic/content")
    outputs = {c["id"]: c["outputs"] for c in r.json()["cells"]}
    assert outputs["a"] == [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]


async def test_png_display_updated_from_another_cell(kserver: ServerProcess, http: httpx.AsyncClient) -> None:
    show = (
        "from IPython.display import display\n"
        f"h = display({{'image/png': '{PNG}', 'text/plain': 'v1'}}, raw=True, display_id='pic')"
    )
    update = (
        "from IPython.display import update_display\n"
        "update_display({'text/plain': 'v2'}, raw=True, display_id='pic')"
    )
    await create(http, "disp", {"show": show, "update": update})
    r = await http.post("/api/v1/notebooks/disp/execute", json={"cells": ["show", "update"], "wait": True})
    assert r.status_code == 200, r.text
    results = {x["id"]: x for x in r.json()["results"]}
    assert results["show"]["state"] == "done" and results["update"]["state"] == "done"
    assert results["update"]["outputs"] == []
    (out,) = results["show"]["outputs"]
    assert out["output_type"] == "display_data" and out["data"] == {"text/plain": "v2"}
    # before the update it was the PNG: history holds the display with the image
    r = await http.get("/api/v1/notebooks/disp/history", params={"since": 0, "limit": 100})
    ops = orjson.dumps(r.json()["items"]).decode()
    assert PNG in ops and '"display_update"' in ops


async def test_clear_output_wait_and_progress_bar(kserver: ServerProcess, http: httpx.AsyncClient) -> None:
    clear = (
        "import time\nfrom IPython.display import clear_output\n"
        "for i in range(5):\n    clear_output(wait=True)\n    print('step', i)\n    time.sleep(0.05)"
    )
    bar = (
        "import sys, time\nfor i in range(101):\n    sys.stdout.write(f'\\rprogress {i:3d}%')\n"
        "    sys.stdout.flush()\n    time.sleep(0.005)\nprint()"
    )
    await create(http, "clear", {"clear": clear, "bar": bar})
    async with SyncClient.connect(kserver.ws_url("clear", await token(http, "clear"))) as ed:
        await ed.start()
        await run_ws(ed, ["clear", "bar"])
        assert cell(ed, "clear").outputs == [{"output_type": "stream", "name": "stdout", "text": "step 4\n"}]
        text = text_of(cell(ed, "bar"))
        assert render(text) == "progress 100%\n"
        assert text.count("\r") < 30  # 101 redraws coalesced into a few commits


async def test_input_answered_over_the_websocket_and_password_never_stored(
    kserver: ServerProcess, http: httpx.AsyncClient
) -> None:
    ask = "name = input('name? ')\nprint('hi', name)"
    secret = "import getpass\npw = getpass.getpass('pw: ')\nprint(len(pw))"
    await create(http, "ask", {"ask": ask, "secret": secret})
    async with (
        SyncClient.connect(kserver.ws_url("ask", await token(http, "ask"))) as ed,
        SyncClient.connect(kserver.ws_url("ask", await token(http, "ask", "editor", "other"))) as other,
        SyncClient.connect(kserver.ws_url("ask", await token(http, "ask", "viewer", "v"))) as viewer,
    ):
        for c in (ed, other, viewer):
            await c.start()
        await ed.send({"type": "execute", "cells": ["ask", "secret"]})
        request = await ed.until("input_request", 30)
        assert request == {"type": "input_request", "cell": "ask", "prompt": "name? ", "password": False}
        await other.send({"type": "input_reply", "value": "Mallory"})  # not the requester: refused
        assert (await other.until("error"))["code"] == "no_input_pending"
        await ed.send({"type": "input_reply", "value": "Ada"})
        request = await ed.until("input_request", 30)
        assert request == {"type": "input_request", "cell": "secret", "prompt": "pw: ", "password": True}
        await ed.send({"type": "input_reply", "value": "sekrit-9"})
        await pump_until_final(ed, ["ask", "secret"])
        await pump_until_final(viewer, ["ask", "secret"])
        assert text_of(cell(ed, "ask")) == "name? Ada\nhi Ada\n"
        assert text_of(cell(ed, "secret")) == "pw: \n8\n"
        assert not any(m["type"] == "input_request" for m in viewer.received + other.received)
        assert not any("sekrit" in f for f in viewer.raw_frames + ed.raw_frames + other.raw_frames)
    content = (await http.get("/api/v1/notebooks/ask/content")).text
    history = (await http.get("/api/v1/notebooks/ask/history", params={"since": 0, "limit": 1000})).text
    assert "Ada" in content and "sekrit" not in content and "sekrit" not in history
    assert "sekrit" not in kserver.log()


async def test_input_from_http_execute_is_an_error_not_a_hang(
    kserver: ServerProcess, http: httpx.AsyncClient
) -> None:
    await create(http, "askhttp", {"ask": "x = input('?')", "after": "print('after')"})
    with trio.fail_after(30):
        r = await http.post("/api/v1/notebooks/askhttp/execute", json={"cells": "all", "wait": True})
    results = {x["id"]: x for x in r.json()["results"]}
    assert results["ask"]["state"] == "error"
    assert results["ask"]["outputs"][-1]["ename"] == "StdinNotImplementedError"
    assert results["after"]["state"] == "aborted"


async def test_interrupt_stops_sleep_and_the_kernel_keeps_its_state(
    kserver: ServerProcess, http: httpx.AsyncClient
) -> None:
    await create(
        http,
        "intr",
        {
            "set": "x = 41",
            "sleep": "import time\nprint('zz', flush=True)\ntime.sleep(60)",
            "get": "print(x + 1)",
        },
    )
    async with SyncClient.connect(kserver.ws_url("intr", await token(http, "intr"))) as ed:
        await ed.start()
        await run_ws(ed, ["set"])
        await ed.send({"type": "execute", "cells": ["sleep"]})
        await pump_until(ed, lambda: text_of(cell(ed, "sleep")) == "zz\n")
        started = trio.current_time()
        await ed.send({"type": "interrupt"})
        await pump_until_final(ed, ["sleep"])
        assert trio.current_time() - started < 4  # a real interrupt, not the 5 s restart
        sleep = cell(ed, "sleep")
        assert sleep.exec_state == "error" and sleep.outputs[-1]["ename"] == "KeyboardInterrupt"
        await run_ws(ed, ["get"])
        assert text_of(cell(ed, "get")) == "42\n"


async def test_two_editors_queue_runs_in_request_order(
    kserver: ServerProcess, http: httpx.AsyncClient
) -> None:
    cells = {
        f"c{i}": f"import time\ntime.sleep(0.1)\nlog = globals().setdefault('log', [])\nlog.append({i})"
        for i in range(6)
    }
    cells["show"] = "print(log)"
    await create(http, "queue", cells)
    async with (
        SyncClient.connect(kserver.ws_url("queue", await token(http, "queue", user="ann"))) as a,
        SyncClient.connect(kserver.ws_url("queue", await token(http, "queue", user="bob"))) as b,
    ):
        await a.start()
        await b.start()
        await a.send({"type": "execute", "cells": ["c0", "c1", "c2"]})
        await b.send({"type": "execute", "cells": ["c3", "c4", "c5"]})
        await pump_until(b, lambda: any(m["type"] == "kernel" and len(m["queue"]) >= 3 for m in b.received))
        await pump_until_final(a, [f"c{i}" for i in range(6)])
        assert all(cell(a, f"c{i}").exec_state == "done" for i in range(6))
        await run_ws(a, ["show"])
        order = text_of(cell(a, "show"))
        assert order in ("[0, 1, 2, 3, 4, 5]\n", "[3, 4, 5, 0, 1, 2]\n")


async def test_viewer_gets_4403_for_execute(kserver: ServerProcess, http: httpx.AsyncClient) -> None:
    await create(http, "view", {"a": "print(1)"})
    for message in (
        {"type": "execute", "cells": ["a"]},
        {"type": "interrupt"},
        {"type": "input_reply", "value": ""},
    ):
        async with SyncClient.connect(
            kserver.ws_url("view", await token(http, "view", "viewer", "v"))
        ) as viewer:
            await viewer.start()
            await viewer.send(message)
            assert await close_reason(viewer) == 4403
    r = await http.get("/api/v1/notebooks/view/kernel")
    assert r.json() == {"state": "none", "name": None, "queue": [], "running": None}


async def test_kernel_control_routes(kserver: ServerProcess, http: httpx.AsyncClient) -> None:
    await create(http, "ctl", {"a": "x = 1", "b": "print(x)"})
    r = await http.post("/api/v1/notebooks/ctl/kernel", json={"action": "start"})
    assert r.status_code == 200 and r.json()["state"] == "idle" and r.json()["name"] == "python3"
    r = await http.post("/api/v1/notebooks/ctl/execute", json={"cells": ["a"], "wait": True})
    assert r.json()["results"][0]["state"] == "done"
    r = await http.post("/api/v1/notebooks/ctl/kernel", json={"action": "restart"})
    assert r.json()["state"] == "idle"
    r = await http.post("/api/v1/notebooks/ctl/execute", json={"cells": ["b"], "wait": True})
    assert r.json()["results"][0]["outputs"][-1]["ename"] == "NameError"  # a fresh kernel
    assert kserver.proc is not None
    fds = len(os.listdir(f"/proc/{kserver.proc.pid}/fd"))
    for _ in range(4):  # no fd (sockets, pidfds, event loops) outlives its kernel
        r = await http.post("/api/v1/notebooks/ctl/kernel", json={"action": "restart"})
        assert r.json()["state"] == "idle"
    assert len(os.listdir(f"/proc/{kserver.proc.pid}/fd")) <= fds + 2
    r = await http.post("/api/v1/notebooks/ctl/kernel", json={"action": "shutdown"})
    assert r.json()["state"] == "none"
    r = await http.post("/api/v1/notebooks/ctl/kernel", json={"action": "explode"})
    assert r.status_code == 422
    r = await http.post("/api/v1/notebooks/ctl/execute", json={"cells": ["nope"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "cell_not_found"
    r = await http.post("/api/v1/notebooks/missing/execute", json={"cells": "all"})
    assert r.status_code == 404


async def test_memory_cap_stops_a_big_allocation(kserver: ServerProcess, http: httpx.AsyncClient) -> None:
    # the server's default cap is 2 GiB of address space; without it this allocation succeeds
    await create(http, "mem", {"big": "b = bytearray(4 * 2**30)", "ok": "print('alive')"})
    r = await http.post("/api/v1/notebooks/mem/execute", json={"cells": ["big"], "wait": True})
    (result,) = r.json()["results"]
    assert result["state"] == "error" and result["outputs"][-1]["ename"] == "MemoryError"
    r = await http.post("/api/v1/notebooks/mem/execute", json={"cells": ["ok"], "wait": True})
    assert r.json()["results"][0]["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "alive\n"}
    ]
