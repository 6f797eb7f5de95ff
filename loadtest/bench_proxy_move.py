"""How fast nginx (agora proxy-config) moves a killed host's notebooks: three real hosts behind
Debian's nginx, N notebook ids, latency of one request per id before and right after `kill -9`.

    .venv/bin/python loadtest/bench_proxy_move.py [--notebooks 300]

The proxy's connect timeout is set to 10 s, so a request that moved within milliseconds moved on
the refused connection, not on a timeout. File store: ids are not created (404s are answers too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import HOSTS, notebook_hosts, start_hosts, stop_hosts
from tests.nginx_process import running_proxy


def _latencies(client: httpx.Client, ids: list[str]) -> list[float]:
    out = []
    for nb in ids:
        started = time.perf_counter()
        resp = client.get(f"/api/v1/notebooks/{nb}")
        out.append((time.perf_counter() - started) * 1000)
        if resp.status_code >= 500:
            raise SystemExit(f"{nb}: {resp.status_code} {resp.text[:200]}")
    return out


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} ms, max {max(values):.1f} ms"


def main() -> None:
    """Run the measurement once and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=300)
    args = parser.parse_args()
    hosts = start_hosts(Path(tempfile.mkdtemp(prefix="agora-bench-proxy-")))
    by_name = dict(zip(HOSTS, hosts, strict=True))
    try:
        with (
            running_proxy([h.port for h in hosts], connect_timeout=10) as proxy,
            httpx.Client(base_url=proxy.base_url, headers=hosts[0].headers, timeout=30) as client,
        ):
            ids = [f"m-{i}" for i in range(args.notebooks)]
            before = notebook_hosts(client, ids)
            victim = HOSTS[1]
            moved = [nb for nb in ids if before[nb] == victim]
            stayed = [nb for nb in ids if before[nb] != victim]
            warm = _latencies(client, moved)
            by_name[victim].kill9()
            started = time.perf_counter()
            first = _latencies(client, moved)
            elapsed = time.perf_counter() - started
            others = _latencies(client, stayed)
            after = notebook_hosts(client, ids)
            print("placement:", {h: list(before.values()).count(h) for h in HOSTS})
            print(
                f"{victim} killed; its {len(moved)} notebooks now on:",
                {h: [after[nb] for nb in moved].count(h) for h in HOSTS if h != victim},
            )
            print("its notebooks before the kill:       ", _summary(warm))
            print("its notebooks, first request after:  ", _summary(first), f"({elapsed:.2f} s for all)")
            print("other notebooks after the kill:      ", _summary(others))
            print("other notebooks stayed where they were:", all(after[nb] == before[nb] for nb in stayed))
    finally:
        stop_hosts(hosts)


if __name__ == "__main__":
    main()
