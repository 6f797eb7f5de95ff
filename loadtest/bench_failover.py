"""Failover time on `--store` (PostgreSQL): kill -9 the owner of a busy notebook, time until
another host serves it.

    .venv/bin/python loadtest/bench_failover.py [--kills 10] [--store postgresql://…]

Two hosts A and B on one database (a private cluster unless --store is given). Each round an
editor types on A's notebook (one op every 20 ms, every op awaited); A is killed with SIGKILL;
the editor reconnects to B at once and keeps retrying every 50 ms (what nginx does on a refused
connection) with `since` and its `client` id, resubmits its unacknowledged op, and the round
records: kill -> welcome on B, kill -> first ack on B, acknowledged ops lost (must be 0), ops
applied twice (must be 0). A restarts (a new host) before the next round; hosts swap roles.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pg_cluster import PgCluster
from tests.server_process import ServerProcess
from tests.wsclient import SyncClient


def editor_op(text: str, marker: str) -> list[dict[str, object]]:
    return [{"t": "text", "id": "c", "ops": [len(text), marker] if text else [marker]}]


async def one_round(
    owner: ServerProcess, other: ServerProcess, nb: str, tok: str, n: int
) -> dict[str, float]:
    acked: list[str] = []
    killed = time.monotonic()  # set again at the kill
    client_id = f"ed{n}"
    pending: tuple[int, str] | None = None
    async with SyncClient.connect(owner.ws_url(nb, tok, client=client_id)) as c:
        await c.start()
        start = time.monotonic()
        try:
            while True:
                assert c.notebook is not None
                marker = f"<{n}-{c.seq + 1}>"
                await c.submit(editor_op(c.notebook.cells["c"].source, marker))
                pending = (c.seq, marker)
                with trio.move_on_after(2):
                    while c.inflight is not None:
                        await c.pump()
                if c.inflight is None:
                    acked.append(marker)
                    pending = None
                if time.monotonic() - start > 1.0 and owner.proc is not None and owner.proc.poll() is None:
                    owner.proc.kill()
                    killed = time.monotonic()
                await trio.sleep(0.02)
        except (ConnectionClosed, OSError):
            pass
    version_seen = c.version
    welcome_at: float | None = None
    ack_at = 0.0
    while welcome_at is None:
        try:
            async with SyncClient.connect(other.ws_url(nb, tok, client=client_id, since=version_seen)) as b:
                w = await b.recv()
                if w["type"] != "welcome":
                    raise OSError(str(w))
                welcome = time.monotonic()
                if pending is not None:
                    seq, marker = pending
                    await b.send(
                        {"type": "op", "seq": seq, "base": version_seen, "op": editor_op("", marker)}
                    )
                    while True:
                        m = await b.recv()
                        if m["type"] in ("ack", "reject"):
                            break
                        mine = [e for e in m.get("ops", []) if e["client"] == client_id and e["seq"] == seq]
                        if m["type"] == "ops" and mine:  # applied now: its echo is the ack
                            break
                welcome_at, ack_at = welcome, time.monotonic()
        except (HandshakeError, ConnectionClosed, OSError):
            await trio.sleep(0.05)
    async with httpx.AsyncClient(base_url=other.base_url, headers=other.headers) as http:
        text = "".join(
            c["source"] for c in (await http.get(f"/api/v1/notebooks/{nb}/content")).json()["cells"]
        )
    return {
        "welcome_s": round(welcome_at - killed, 3),
        "first_ack_s": round(ack_at - killed, 3),
        "acked": len(acked),
        "lost": sum(1 for m in acked if m not in text),
        "twice": sum(1 for m in acked if text.count(m) > 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    cluster = None
    url = args.store
    if not url:
        cluster = PgCluster()
        cluster.start()
        url = cluster.database()
    tmp = Path(tempfile.mkdtemp(prefix="agora-failover-"))
    hosts = [
        ServerProcess(data_dir=tmp / f"h{i}", extra_args=["--store", url, "--idle-timeout", "2"])
        for i in range(2)
    ]
    rounds: list[dict[str, float]] = []
    try:
        for h in hosts:
            h.data_dir.mkdir()
            h.start()
        async with httpx.AsyncClient(base_url=hosts[0].base_url, headers=hosts[0].headers) as http:
            for n in range(args.kills):
                nb = f"nb{n}"
                notebook = {
                    "nbformat": 4,
                    "nbformat_minor": 5,
                    "metadata": {},
                    "cells": [
                        {
                            "id": "c",
                            "cell_type": "code",
                            "metadata": {},
                            "source": "",
                            "outputs": [],
                            "execution_count": None,
                        }
                    ],
                }
                http.base_url = httpx.URL(hosts[1].base_url)
                assert (
                    await http.post("/api/v1/notebooks", json={"id": nb, "notebook": notebook})
                ).status_code == 201
                r = await http.post(
                    "/api/v1/tokens", json={"notebook": nb, "user": {"id": "u"}, "role": "editor"}
                )
                tok = r.json()["token"]
                owner, other = hosts[n % 2], hosts[(n + 1) % 2]
                rounds.append(await one_round(owner, other, nb, tok, n))
                print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
                owner.start()
    finally:
        for h in hosts:
            if h.proc is not None and h.proc.poll() is None:
                h.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    welcome = sorted(r["welcome_s"] for r in rounds)
    ack = sorted(r["first_ack_s"] for r in rounds)
    return {
        "bench": "failover",
        "kills": len(rounds),
        "welcome_s": {"min": welcome[0], "median": statistics.median(welcome), "max": welcome[-1]},
        "first_ack_s": {"min": ack[0], "median": statistics.median(ack), "max": ack[-1]},
        "acked_ops": sum(int(r["acked"]) for r in rounds),
        "lost": sum(int(r["lost"]) for r in rounds),
        "applied_twice": sum(int(r["twice"]) for r in rounds),
        "rounds": rounds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--store", default=None, help="postgresql:// URL (default: a private cluster)")
    result = trio.run(main_async, p.parse_args())
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["applied_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
