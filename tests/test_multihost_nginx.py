"""Three real hosts on one real PostgreSQL behind real nginx (`agora proxy-config`'s config):
placement by notebook, failover after kill -9 under load, and a restarted host stealing nothing.

Editors here type markers at position 0 of their own cell (always valid at any base), so a
client needs no OT state to resume: after a lost connection it reconnects through the proxy with
`since` (the last version it saw) and its `client` id, and resends its unacknowledged op with the
same `seq` (applied once: the dedupe table is in the database)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
import psycopg
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from tests.cluster import HOSTS, start_hosts, stop_hosts, upgrade_host
from tests.nginx_process import NginxProcess, running_proxy
from tests.pg_cluster import PgCluster
from tests.server_process import ServerProcess

HOST_HEADER = "x-agora-host"
NAMES = list(HOSTS)
IDS = [f"nb{i:02d}" for i in range(30)]


@dataclass
class Cluster:
    proxy: NginxProcess
    hosts: list[ServerProcess]
    url: str

    def host(self, name: str) -> ServerProcess:
        return self.hosts[NAMES.index(name)]


@pytest.fixture
def cluster(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Cluster]:
    """Three hosts (tests/cluster.py) on one fresh database, behind `agora proxy-config`'s nginx."""
    url = pg_cluster.database()
    hosts = start_hosts(tmp_path, NAMES, extra_env={"AGORA_STORE": url}, extra_args=("--idle-timeout", "30"))
    try:
        with running_proxy([h.port for h in hosts]) as proxy:
            yield Cluster(proxy, hosts, url)
    finally:
        stop_hosts(hosts)


def create_notebooks(c: Cluster) -> dict[str, str]:
    """The 30 notebooks (created through the proxy) and an editor token for each."""
    tokens = {}
    with httpx.Client(base_url=c.proxy.base_url, headers=c.hosts[0].headers, timeout=30) as http:
        for nb in IDS:
            cells = [{"id": "c", "cell_type": "markdown", "metadata": {}, "source": ""}]
            notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
            r = http.post("/api/v1/notebooks", json={"id": nb, "notebook": notebook})
            assert r.status_code == 201, r.text
            r = http.post("/api/v1/tokens", json={"notebook": nb, "user": {"id": "u"}, "role": "editor"})
            assert r.status_code == 201, r.text
            tokens[nb] = r.json()["token"]
    return tokens


def proxied(c: Cluster) -> httpx.AsyncClient:
    """An API client pointed at nginx."""
    return httpx.AsyncClient(base_url=c.proxy.base_url, headers=c.hosts[0].headers, timeout=30)


def lease_hosts(url: str) -> dict[str, str]:
    """notebook -> the host id (agora_hosts.id) holding its lease."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {nb: h for nb, h in conn.execute("SELECT notebook, host FROM agora_leases").fetchall()}


def test_every_request_and_socket_of_a_notebook_lands_on_one_host(cluster: Cluster) -> None:
    tokens = create_notebooks(cluster)
    with httpx.Client(base_url=cluster.proxy.base_url, headers=cluster.hosts[0].headers, timeout=30) as http:
        placement: dict[str, str] = {}
        for nb in IDS:
            seen = set()
            for path in ("/content", "/history", "/sessions", "", "/content?version=0"):
                r = http.get(f"/api/v1/notebooks/{nb}{path}")
                assert r.status_code == 200, (nb, path, r.text)
                seen.add(r.headers[HOST_HEADER])
            status, host = upgrade_host(cluster.proxy.port, nb, tokens[nb])
            assert status == 101
            seen.add(host)
            assert len(seen) == 1, (nb, seen)
            placement[nb] = seen.pop()
        spread = Counter(placement.values())
        assert set(spread) == set(NAMES), spread  # 30 notebooks over all three hosts
        # Other routes go to any host.
        assert len({http.get("/healthz").headers[HOST_HEADER] for _ in range(30)}) > 1


@dataclass
class Editor:
    """Types markers into its notebook through the proxy, resuming after every lost connection."""

    proxy: NginxProcess
    notebook: str
    token: str
    name: str
    acked: list[str] = field(default_factory=list)
    version: int = 0
    seq: int = 0
    unacked: tuple[int, str] | None = None
    lost_at: float | None = None
    resumed_after: list[float] = field(default_factory=list)
    hosts_seen: list[str] = field(default_factory=list)

    def url(self) -> str:
        query = {"token": self.token, "client": self.name}
        if self.version:
            query["since"] = str(self.version)
        return f"ws://127.0.0.1:{self.proxy.port}/api/v1/notebooks/{self.notebook}/ws?{urlencode(query)}"

    async def run(self, stop: trio.Event) -> None:
        while not stop.is_set():
            try:
                async with open_websocket_url(self.url()) as ws:
                    welcome = orjson.loads(await ws.get_message())
                    assert welcome["type"] == "welcome", welcome
                    self.version = max(self.version, welcome["version"])
                    for entry in welcome.get("ops", []):
                        self._saw(entry)
                    if self.lost_at is not None:
                        self.resumed_after.append(time.monotonic() - self.lost_at)
                        self.lost_at = None
                    while not stop.is_set():
                        if self.unacked is None:
                            self.seq += 1
                            self.unacked = (self.seq, f"<{self.name}-{self.seq}>")
                        seq, marker = self.unacked
                        op = [{"t": "text", "id": "c", "ops": [marker]}]
                        await ws.send_message(
                            orjson.dumps({"type": "op", "seq": seq, "base": self.version, "op": op}).decode()
                        )
                        while self.unacked is not None:
                            with trio.fail_after(20):
                                message = orjson.loads(await ws.get_message())
                            if message["type"] == "ack" and message["seq"] == seq:
                                self._acked()
                            elif message["type"] == "ops":
                                for entry in message["ops"]:
                                    self._saw(entry)
                            elif message["type"] == "reject":
                                raise AssertionError(message)
                        await trio.sleep(0.05)
            except (ConnectionClosed, HandshakeError, OSError):
                if self.lost_at is None:
                    self.lost_at = time.monotonic()
                await trio.sleep(0.1)

    def _saw(self, entry: dict[str, object]) -> None:
        self.version = max(self.version, int(entry["v"]))  # type: ignore[call-overload]
        if self.unacked is not None and entry["client"] == self.name and entry["seq"] == self.unacked[0]:
            self._acked()

    def _acked(self) -> None:
        assert self.unacked is not None
        self.acked.append(self.unacked[1])
        self.unacked = None


async def test_kill9_one_host_under_load_moves_its_notebooks(cluster: Cluster) -> None:
    tokens = await trio.to_thread.run_sync(create_notebooks, cluster)
    editors = [Editor(cluster.proxy, nb, tokens[nb], f"ed{nb}") for nb in IDS]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for e in editors:
            nursery.start_soon(e.run, stop)
        with trio.fail_after(60):
            while any(len(e.acked) < 3 for e in editors):
                await trio.sleep(0.1)
        async with proxied(cluster) as http:
            placement = {
                nb: (await http.get(f"/api/v1/notebooks/{nb}")).headers[HOST_HEADER] for nb in IDS
            }
        victim_name = Counter(placement.values()).most_common(1)[0][0]
        victim = cluster.host(victim_name)
        moved = [e for e in editors if placement[e.notebook] == victim_name]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        with trio.fail_after(30):
            while any(not e.resumed_after for e in moved):
                await trio.sleep(0.05)
        failover = max(e.resumed_after[0] for e in moved)
        assert failover < 10, f"notebooks of the killed host served again after {failover:.1f} s"
        await trio.sleep(1.0)  # keep typing on the new owners
        # The killed host comes back (same port, same name): it takes nothing that is open.
        leases_before = lease_hosts(cluster.url)
        await trio.to_thread.run_sync(victim.start)
        await trio.sleep(3.0)
        assert lease_hosts(cluster.url) == leases_before
        async with proxied(cluster) as http:
            for e in moved:
                r = await http.get(f"/api/v1/notebooks/{e.notebook}")
                assert r.status_code == 200 and r.headers[HOST_HEADER] != victim_name, r.headers
        stop.set()
    assert all(len(e.resumed_after) == 1 for e in moved), [e.resumed_after for e in moved]
    untouched = [e for e in editors if e not in moved]
    assert all(not e.resumed_after for e in untouched), "only the killed host's notebooks moved"
    async with proxied(cluster) as http:
        for e in editors:
            r = await http.get(f"/api/v1/notebooks/{e.notebook}/content")
            text = "".join(r.json()["cells"][0]["source"])
            assert all(text.count(m) == 1 for m in e.acked), (e.notebook, "acknowledged ops present once")
    total = sum(len(e.acked) for e in editors)
    print(f"failover of {len(moved)} notebooks: max {failover:.2f} s after kill; {total} acked ops, 0 lost")
