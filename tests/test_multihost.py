"""Several real hosts (`agora serve --store postgresql://…`) on one real PostgreSQL, no proxy:
kill -9 rounds, ownership (503 not_owner for HTTP and WebSocket upgrades, never two writers,
a stalled owner fenced off), keys and tokens accepted by every host."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.pg_cluster import PgCluster
from tests.server_process import ROOT, ServerProcess
from tests.test_durability import test_kill9_rounds_lose_no_acknowledged_op as kill9_rounds
from tests.test_sync import head_sources, make_notebook, token
from tests.wsclient import SyncClient, close_reason

HostFactory = Callable[..., ServerProcess]


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.database()


@pytest.fixture
def start_host(pg_url: str, tmp_path: Path) -> Iterator[HostFactory]:
    """`start_host(ttl=…, args=[…])` starts another host on the test's database."""
    started: list[ServerProcess] = []

    def start(ttl: float = 5.0, args: tuple[str, ...] = ()) -> ServerProcess:
        proc = ServerProcess(
            data_dir=tmp_path / f"host{len(started)}",
            extra_args=["--store", pg_url, *args],
            extra_env={"AGORA_LEASE_TTL": str(ttl)},
        )
        proc.data_dir.mkdir(parents=True)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()
    for proc in started:
        assert "Traceback" not in proc.log(), proc.log()[-4000:]


def client(host: ServerProcess, api_key: str | None = None) -> httpx.AsyncClient:
    key = api_key or host.api_key
    return httpx.AsyncClient(base_url=host.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def upgrade_answer(host: ServerProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer to a raw WebSocket upgrade request."""
    sock = await trio.open_tcp_stream("127.0.0.1", host.port)
    async with sock:
        await sock.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(10):
            while chunk := await sock.receive_some(65536):
                data += chunk
                if b"\r\n\r\n" in data and not data.startswith(b"HTTP/1.1 503"):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def keys_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`agora keys --store URL …` as a separate process (the CLI an operator runs)."""
    argv = [sys.executable, str(ROOT / "server.py"), "keys", "--store", url, *args]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
async def pg_server(start_host: HostFactory) -> AsyncIterator[ServerProcess]:
    yield start_host()


async def test_kill9_rounds_on_postgresql(pg_server: ServerProcess) -> None:
    """The file store's crash rounds, on PostgreSQL: 0 acknowledged ops lost, resubmits once."""
    async with client(pg_server) as http:
        await kill9_rounds(pg_server, http)


async def test_second_host_answers_not_owner_and_other_routes_work(start_host: HostFactory) -> None:
    a, b = start_host(args=("--idle-timeout", "1")), start_host(args=("--idle-timeout", "1"))
    async with client(a) as http_a, client(b) as http_b:
        await make_notebook(http_b, "nb", cells=1)  # creation works on any host
        tok = await token(http_b, "nb")  # so do tokens and lists
        assert [n["id"] for n in (await http_b.get("/api/v1/notebooks")).json()["items"]] == ["nb"]
        async with SyncClient.connect(a.ws_url("nb", tok)) as editor:
            await editor.start()
            for path in ("", "/content", "/history", "/sessions"):
                r = await http_b.get(f"/api/v1/notebooks/nb{path}")
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "not_owner"
            r = await httpx.AsyncClient().get(f"{b.base_url}/embed/nb")
            assert (r.status_code, r.headers.get("retry-after")) == (503, "1")
            status, headers, body = await upgrade_answer(b, f"/api/v1/notebooks/nb/ws?token={tok}")
            assert (status, headers["retry-after"]) == (503, "1") and b"not_owner" in body
            assert headers["x-agora-host"]  # the host that refused says who it is
            assert (await http_b.get("/api/v1/notebooks")).status_code == 200
            await token(http_b, "nb", user="u2")
            assert (await http_a.get("/api/v1/notebooks/nb/content")).status_code == 200
            await editor.submit([{"t": "text", "id": "s0", "ops": [6, "!"]}])
            while editor.inflight is not None:
                await editor.pump()
        # The owner's room closes when idle and gives the lease back: now b serves it.
        with trio.fail_after(15):
            while (r := await http_b.get("/api/v1/notebooks/nb/content")).status_code == 503:
                await trio.sleep(0.2)
        assert r.status_code == 200 and r.json()["cells"][0]["source"] == "cell 0!"


async def test_concurrent_opens_on_two_hosts_leave_one_owner(start_host: HostFactory) -> None:
    """Both hosts asked at once, many times, for a closed notebook (no proxy): one of them owns it,
    the other answers not_owner, and every edit lands once in one linear history."""
    a, b = start_host(args=("--idle-timeout", "0.5")), start_host(args=("--idle-timeout", "0.5"))
    async with client(a) as http_a, client(b) as http_b:
        await make_notebook(http_a, "nb", cells=1)
        expected: list[str] = []
        for round_no in range(6):
            answers: dict[str, int] = {}

            async def put(
                name: str, http: httpx.AsyncClient, marker: str, answers: dict[str, int] = answers
            ) -> None:
                r = await http.get("/api/v1/notebooks/nb/content")
                answers[name] = r.status_code
                if r.status_code == 200:
                    cells = r.json()["cells"]
                    cells[0]["source"] = "".join(cells[0]["source"]) + marker
                    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
                    p = await http.put("/api/v1/notebooks/nb/content", json={"notebook": nb})
                    if p.status_code == 200:
                        expected.append(marker)
                    else:
                        assert p.json()["error"]["code"] in ("not_owner", "closing"), p.text
                else:
                    assert r.status_code == 503 and r.json()["error"]["code"] == "not_owner", r.text
                    assert r.headers["retry-after"] == "1"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(put, "a", http_a, f"<a{round_no}>")
                nursery.start_soon(put, "b", http_b, f"<b{round_no}>")
            assert sorted(answers.values()) != [503, 503], answers  # someone served it
            await trio.sleep(1.2)  # the owner's room idles out and releases the lease
        with trio.fail_after(15):
            while True:
                r = await http_a.get("/api/v1/notebooks/nb/history?since=0&limit=1000")
                if r.status_code == 200:
                    break
                await trio.sleep(0.2)
        items = r.json()["items"]
        assert [i["v"] for i in items] == list(range(1, len(items) + 1))  # one linear history
        text = "".join((await head_sources(http_a, "nb")).values())
        assert all(text.count(m) == 1 for m in expected), (text, expected)


async def test_a_stalled_owner_is_fenced_off(start_host: HostFactory) -> None:
    """The owner freezes (SIGSTOP) longer than the lease ttl; another host takes the notebook and
    commits; the old owner, resumed, acknowledges nothing more and closes its sockets with 1012."""
    a, b = start_host(ttl=1.5), start_host(ttl=1.5)
    async with client(a) as http_a, client(b) as http_b:
        await make_notebook(http_a, "nb", cells=1)
        tok = await token(http_a, "nb")
        async with SyncClient.connect(a.ws_url("nb", tok, client="ca")) as ca:
            await ca.start()
            await ca.submit([{"t": "text", "id": "s0", "ops": [6, "<a1>"]}])
            while ca.inflight is not None:
                await ca.pump()
            assert a.proc is not None
            a.proc.send_signal(signal.SIGSTOP)
            try:
                await ca.submit([{"t": "text", "id": "s0", "ops": [10, "<a2>"]}])  # never acknowledged
                await trio.sleep(2.5)
                async with SyncClient.connect(b.ws_url("nb", tok, client="cb")) as cb:
                    await cb.start()
                    await cb.submit([{"t": "text", "id": "s0", "ops": [10, "<b1>"]}])
                    while cb.inflight is not None:
                        await cb.pump()
            finally:
                a.proc.send_signal(signal.SIGCONT)
            got: list[dict[str, Any]] = []
            with trio.fail_after(15):
                try:
                    while True:
                        got.append(await ca.recv(timeout=15))
                except ConnectionClosed as exc:
                    assert exc.reason is not None and exc.reason.code == 1012, exc.reason
            assert not [m for m in got if m["type"] == "ack"], got
        r = await http_b.get("/api/v1/notebooks/nb/history?since=0")
        assert [(i["v"], i["client"]) for i in r.json()["items"]] == [(1, "ca"), (2, "cb")]
        assert (await head_sources(http_b, "nb"))["s0"] == "cell 0<a1><b1>"
    assert "lease" in a.log() or "not_owner" in a.log() or "another host" in a.log(), a.log()[-2000:]


async def test_keys_and_tokens_work_on_every_host(start_host: HostFactory, pg_url: str) -> None:
    a, b = start_host(), start_host()
    out = await keys_cli(pg_url, "create", "--name", "lms")
    assert out.returncode == 0, out.stderr
    key = next(w for w in out.stdout.split() if w.startswith("agora_"))
    for host in (a, b):
        async with client(host, key) as http:
            with trio.fail_after(10):
                while (await http.get("/api/v1/notebooks")).status_code == 401:
                    await trio.sleep(0.1)
    async with client(a, key) as http_a:
        await make_notebook(http_a, "nb", cells=1)
        tok = await token(http_a, "nb")  # minted on a …
    async with SyncClient.connect(b.ws_url("nb", tok)) as c:  # … opens a socket on b
        welcome = await c.start()
        assert welcome["type"] == "welcome" and welcome["role"] == "editor"
    listed = await keys_cli(pg_url, "list")
    assert "lms" in listed.stdout and key not in listed.stdout
    revoked = await keys_cli(pg_url, "revoke", "lms")
    assert revoked.returncode == 0, revoked.stderr
    for host in (a, b):
        async with client(host, key) as http:
            with trio.fail_after(10):
                while (await http.get("/api/v1/notebooks")).status_code != 401:
                    await trio.sleep(0.1)


async def test_closing_sockets_say_1012_when_the_database_goes(start_host: HostFactory, pg_url: str) -> None:
    """The database ends every connection of the owner: its rooms close with 1012."""
    a = start_host(ttl=1.0)
    async with client(a) as http:
        await make_notebook(http, "nb", cells=1)
        tok = await token(http, "nb")
        async with SyncClient.connect(a.ws_url("nb", tok)) as c:
            await c.start()
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            assert await close_reason(c, timeout=15) == 1012


async def test_an_unreachable_database_is_a_clear_startup_error(tmp_path: Path) -> None:
    from tests.server_process import free_port

    argv = [sys.executable, str(ROOT / "server.py"), "serve", "--port", "0", "--data-dir", str(tmp_path)]
    argv += ["--store", f"postgresql://postgres@127.0.0.1:{free_port()}/none"]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)
    err = done.stderr.decode()
    assert done.returncode == 2 and "cannot use the database" in err and "Traceback" not in err, err


async def test_kicks_and_incarnations_hold_on_every_host(start_host: HostFactory) -> None:
    """A kick made on the owner is in the database: after the notebook moves, the new owner still
    refuses the kicked user's older tokens; a token of a deleted notebook dies on every host."""
    a, b = start_host(args=("--idle-timeout", "0.5")), start_host(args=("--idle-timeout", "0.5"))
    async with client(a) as http_a, client(b) as http_b:
        await make_notebook(http_a, "nb", cells=1)
        old = await token(http_a, "nb", user="mallory")
        await trio.sleep(0.01)
        assert (await http_a.delete("/api/v1/notebooks/nb/sessions/mallory")).status_code == 204
        with trio.fail_after(15):  # a's room idles out and gives the lease back
            while (await http_b.get("/api/v1/notebooks/nb/content")).status_code == 503:
                await trio.sleep(0.2)
        async with SyncClient.connect(b.ws_url("nb", old)) as again:
            assert await close_reason(again) == 4403, "the kicked token got back in on another host"
        fresh = await token(http_a, "nb", user="mallory")
        async with SyncClient.connect(b.ws_url("nb", fresh)) as back:
            assert (await back.start())["user"]["id"] == "mallory"
        await trio.sleep(1.0)  # b's room idles out too
        assert (await http_a.delete("/api/v1/notebooks/nb")).status_code == 204
        await make_notebook(http_a, "nb", cells=1)
        async with SyncClient.connect(b.ws_url("nb", fresh)) as stale:
            assert await close_reason(stale) in (4401, 4403, 4404)
