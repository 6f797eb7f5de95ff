"""Hostile-client benchmark (issue 9): what one client can take from everyone else.

    .venv/bin/python loadtest/bench_isolation.py [--flood-seconds 10] [--server-root DIR]

Three runs against the real server on a free loopback port, one JSON line each:

1. `uploads`: server RSS before and at its peak during 16 concurrent unauthenticated POSTs of
   30 MiB each (the gate answers 401 on the head; nothing is buffered).
2. `join`: time for one viewer, then for 20 concurrent viewers, to receive the welcome of a
   ~30 MiB notebook (the DOC is encoded once, off the trio thread, and streamed as shared bytes).
3. `fairness`: a normal editor on notebook B sends a small op, waits for its ack, 20 ms pause,
   repeat; first alone, then while an editor on notebook A floods ~900 KiB inserts as fast as
   its socket takes them. Prints B's ack latency (p50/p99/max, ms) in both phases and what A
   got accepted. The target: B's p99 under 100 ms during the flood.

`--server-root` runs another checkout's `server.py` (to measure the code before a change).
"""

from __future__ import annotations

import argparse
import functools
import math
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.server_process as server_process
from tests.server_process import ServerProcess

MiB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of `pid` in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def quantiles(values: list[float]) -> dict[str, float | int]:
    """p50/p99/max of `values` (milliseconds), rounded."""
    if not values:
        return {"n": 0}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))], 1)

    return {"n": len(s), "p50": q(0.5), "p99": q(0.99), "max": round(s[-1], 1)}


# ---- 1. unauthenticated uploads ------------------------------------------------------------------


def bench_uploads(server: ServerProcess, count: int = 16, size: int = 30 * MiB) -> dict[str, Any]:
    """RSS before and at the peak of `count` concurrent unauthenticated uploads of `size` bytes."""
    assert server.proc is not None
    body = b"x" * size
    head = (
        f"POST /api/v1/notebooks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    statuses: list[str] = []

    def upload() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            try:
                sock.sendall(head + body)
            except OSError:
                pass
            try:
                statuses.append(sock.recv(12).decode(errors="replace")[9:12] or "closed")
            except OSError as exc:
                statuses.append(type(exc).__name__)

    before = rss(server.proc.pid)
    peak = before
    started = time.perf_counter()
    threads = [threading.Thread(target=upload) for _ in range(count)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss(server.proc.pid))
        time.sleep(0.005)
    return {
        "run": "uploads",
        "uploads": count,
        "upload_mib": size // MiB,
        "rss_before_mib": round(before / MiB, 1),
        "rss_peak_mib": round(peak / MiB, 1),
        "seconds": round(time.perf_counter() - started, 2),
        "statuses": {s: statuses.count(s) for s in set(statuses)},
    }


# ---- 2. joining a 30 MiB notebook ----------------------------------------------------------------


def big_notebook(total: int, cells: int = 30) -> dict[str, Any]:
    """An ipynb with `cells` code cells whose sources add up to about `total` bytes."""
    per = total // cells
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "id": f"c{i}",
                "cell_type": "code",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": f"print('{i}')\n" + "x" * (per - 16) + "\n",
            }
            for i in range(cells)
        ],
    }


async def token(api: httpx.AsyncClient, notebook: str, role: str, user: str) -> str:
    """A user token for `notebook`."""
    body = {"notebook": notebook, "user": {"id": user, "name": user}, "role": role}
    r = await api.post("/api/v1/tokens", json=body)
    r.raise_for_status()
    return str(r.json()["token"])


async def join_once(server: ServerProcess, notebook: str, tok: str) -> tuple[float, int]:
    """Seconds until the whole welcome frame arrived, and its size. A raw socket that reads the
    frame without decoding it, so the figure is the server's, not a client library's."""
    started = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        target = server.ws_url(notebook, tok).split(str(server.port), 1)[1]
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        if not buf.startswith(b"HTTP/1.1 101"):
            raise OSError(f"no upgrade: {bytes(buf[:40])!r}")
        del buf[: buf.index(b"\r\n\r\n") + 4]
        while len(buf) < 10:
            buf += await stream.receive_some(65536)
        length, header = buf[1] & 0x7F, 2
        if length == 126:
            length, header = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(buf[2:10], "big"), 10
        received = len(buf) - header
        while received < length:
            data = await stream.receive_some(1 << 20)
            if not data:
                raise OSError("closed during the welcome")
            received += len(data)
        if b'"welcome"' not in bytes(buf[header : header + 20]):
            raise OSError(f"first frame is not a welcome: {bytes(buf[header:header + 60])!r}")
        return time.perf_counter() - started, length


async def bench_join(server: ServerProcess, api: httpx.AsyncClient, size: int = 30 * MiB) -> dict[str, Any]:
    """Welcome times for one viewer, then for 20 at once, on a notebook of about `size` bytes."""
    r = await api.post("/api/v1/notebooks", json={"id": "big", "notebook": big_notebook(size)}, timeout=120)
    if r.status_code != 201:
        return {"run": "join", "error": f"upload: {r.status_code} {r.text[:200]}"}
    tok = await token(api, "big", "viewer", "viewer")
    out: dict[str, Any] = {"run": "join", "notebook_mib": round(size / MiB, 1)}
    try:
        with trio.fail_after(60):
            first, length = await join_once(server, "big", tok)
            again, _ = await join_once(server, "big", tok)
            times: list[float] = []

            async def one() -> None:
                times.append((await join_once(server, "big", tok))[0])

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one)
        out.update(
            welcome_mib=round(length / MiB, 1),
            first_join_s=round(first, 3),
            second_join_s=round(again, 3),
            concurrent_20_max_s=round(max(times), 3),
        )
    except (trio.TooSlowError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# ---- 3. fairness ---------------------------------------------------------------------------------


async def normal_editor(server: ServerProcess, tok: str, seconds: float, samples: list[float]) -> None:
    """Small op, wait for its ack (the op coming back), pause 20 ms, repeat for `seconds`."""
    async with open_websocket_url(server.ws_url("calm", tok), max_message_size=64 * MiB) as ws:
        welcome = orjson.loads(await ws.get_message())
        version = welcome["version"]
        client = welcome["client"]
        seq = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            seq += 1
            op = [{"t": "text", "id": "c0", "ops": ["x"]}]
            sent = time.perf_counter()
            outgoing = {"type": "op", "seq": seq, "base": version, "op": op}
            await ws.send_message(orjson.dumps(outgoing).decode())
            acked = False
            while not acked:
                message = orjson.loads(await ws.get_message())
                if message["type"] == "ops":
                    for entry in message["ops"]:
                        version = entry["v"]
                        acked = acked or (entry["client"] == client and entry["seq"] == seq)
                elif message["type"] == "reject":
                    raise RuntimeError(f"calm editor rejected: {message}")
            samples.append((time.perf_counter() - sent) * 1000)
            await trio.sleep(0.02)


async def flooding_editor(url: str, seconds: float, result: dict[str, Any]) -> None:
    """Pipeline ~900 KiB inserts into one cell as fast as the socket takes them; read and count;
    reconnect whenever the server cuts the connection (as a hostile client would)."""
    chunk = "y" * (900 * 1024)
    accepted = 0
    rejects: dict[str, int] = {}
    closes: dict[str, int] = {}

    async def session(client: str) -> None:
        nonlocal accepted
        async with open_websocket_url(f"{url}&client={client}", max_message_size=256 * MiB) as ws:
            welcome = orjson.loads(await ws.get_message())
            base, seq = welcome["version"], 0

            async def read() -> None:
                nonlocal accepted
                while True:
                    message = orjson.loads(await ws.get_message())
                    if message["type"] == "ops":
                        mine = [e for e in message["ops"] if e["client"] == client]
                        accepted += len(mine) * len(chunk)
                    elif message["type"] == "reject":
                        code = message["error"]["code"]
                        rejects[code] = rejects.get(code, 0) + 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                while True:
                    seq += 1
                    op = [{"t": "text", "id": "c0", "ops": [chunk]}]
                    message = {"type": "op", "seq": seq, "base": base, "op": op}
                    await ws.send_message(orjson.dumps(message).decode())

    started = time.perf_counter()
    try:
        with trio.move_on_after(seconds):
            attempt = 0
            while True:
                attempt += 1
                try:
                    await session(f"flood{attempt}")
                except* ConnectionClosed as group:
                    for exc in group.exceptions:
                        assert isinstance(exc, ConnectionClosed)
                        code = str(exc.reason.code) if exc.reason is not None else "none"
                        closes[code] = closes.get(code, 0) + 1
                except* OSError:
                    closes["oserror"] = closes.get("oserror", 0) + 1
    finally:
        result["flood_accepted_mib"] = round(accepted / MiB, 1)
        result["flood_mib_per_s"] = round(accepted / MiB / (time.perf_counter() - started), 2)
        result["flood_rejects"] = rejects
        result["flood_closes"] = closes


async def bench_fairness(server: ServerProcess, api: httpx.AsyncClient, seconds: float) -> dict[str, Any]:
    """B's ack latency alone, then during A's flood."""
    cell: dict[str, Any] = {"id": "c0", "cell_type": "code", "metadata": {}, "outputs": []}
    cell.update(execution_count=None, source="")
    for nid in ("calm", "flood"):
        nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
        (await api.post("/api/v1/notebooks", json={"id": nid, "notebook": nb})).raise_for_status()
    calm_tok = await token(api, "calm", "editor", "calm")
    flood_tok = await token(api, "flood", "editor", "flood")
    alone: list[float] = []
    await normal_editor(server, calm_tok, min(5.0, seconds), alone)
    during: list[float] = []
    result: dict[str, Any] = {}
    assert server.proc is not None
    peak = [rss(server.proc.pid)]

    async def sample_rss() -> None:
        while True:
            peak[0] = max(peak[0], rss(server.proc.pid) if server.proc else 0)
            await trio.sleep(0.05)

    # The flooder runs in its own process: in this one, decoding its 900 KiB frames would
    # delay the calm editor's own reads and inflate the very latency being measured.
    flood_cmd = [sys.executable, __file__, "--flood", server.ws_url("flood", flood_tok), str(seconds)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_rss)
        flood = await nursery.start(
            functools.partial(trio.run_process, flood_cmd, stdout=subprocess.PIPE, check=False)
        )
        await trio.sleep(0.5)  # let the flood start
        await normal_editor(server, calm_tok, seconds - 1, during)
        output = await flood.stdout.receive_some(1 << 16) if flood.stdout is not None else b""
        with trio.move_on_after(seconds + 10):
            await flood.wait()
        nursery.cancel_scope.cancel()
    try:
        result.update(orjson.loads(output))
    except orjson.JSONDecodeError:
        result["flood_error"] = output.decode(errors="replace")[-300:]
    return {
        "run": "fairness",
        "flood_seconds": seconds,
        "calm_ack_ms_alone": quantiles(alone),
        "calm_ack_ms_during_flood": quantiles(during),
        **result,
        "rss_peak_mib": round(peak[0] / MiB, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--server-root", type=Path, default=None, help="checkout whose server.py to run")
    parser.add_argument("--flood", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:  # the flooding editor's own process (see bench_fairness)
        flood_result: dict[str, Any] = {}
        await flooding_editor(args.flood[0], float(args.flood[1]), flood_result)
        print(orjson.dumps(flood_result).decode(), flush=True)
        return
    if args.server_root is not None:
        server_process.ROOT = args.server_root.resolve()
    with tempfile.TemporaryDirectory(prefix="agora-bench-isolation-") as tmp:
        server = ServerProcess(data_dir=Path(tmp) / "data")
        server.start()
        try:
            print(orjson.dumps(bench_uploads(server)).decode(), flush=True)
            async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=60) as api:
                print(orjson.dumps(await bench_join(server, api)).decode(), flush=True)
                fairness = await bench_fairness(server, api, args.flood_seconds)
                print(orjson.dumps(fairness).decode(), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    trio.run(main)
