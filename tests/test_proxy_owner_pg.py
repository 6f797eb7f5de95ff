"""A real `not_owner` through nginx: two hosts sharing one PostgreSQL database behind the
`agora proxy-config` nginx (skipped where tests/pg_cluster.py, the PostgreSQL fixture, is absent).

A notebook held open by the host the hash ring does not pick first is still reached through
nginx: the first host answers 503 `not_owner` and nginx walks on to the owner, for HTTP and for
the WebSocket upgrade, again and again, while the first host keeps serving its own notebooks
(`max_fails=0`: the 503s do not take it out of rotation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.cluster import host_of, mint, notebook_hosts, running_cluster, upgrade_host
from tests.wsclient import SyncClient

pytest.importorskip("tests.pg_cluster")

INSERT_C1 = {"t": "cell_insert", "id": "c1", "pos": "m", "cell": {"cell_type": "code", "source": "x"}}


def test_not_owner_is_retried_through_nginx(pg_cluster: Any, tmp_path: Path) -> None:
    env = {"AGORA_STORE": pg_cluster.database()}
    with running_cluster(tmp_path, ("host-a", "host-b"), extra_env=env) as (proxy, hosts):
        host_a, host_b = hosts
        with httpx.Client(base_url=proxy.base_url, headers=host_a.headers, timeout=30) as client:
            ring = notebook_hosts(client, [f"nb-{i:02d}" for i in range(30)])  # 404s: nobody owns them
            on_a = [nb for nb, host in ring.items() if host == "host-a"]
            assert len(on_a) >= 4, ring
            held, own = on_a[:2], on_a[2:4]
            for nb in [*held, *own]:
                created = httpx.post(
                    f"{host_b.base_url}/api/v1/notebooks", headers=host_b.headers, json={"id": nb}
                )
                assert created.status_code == 201, created.text

            def check_routes() -> None:  # blocking HTTP, run off the event loop
                for nb in held:
                    direct = httpx.get(f"{host_a.base_url}/api/v1/notebooks/{nb}", headers=host_a.headers)
                    assert direct.status_code == 503 and direct.json()["error"]["code"] == "not_owner"
                    assert host_of(client.get(f"/api/v1/notebooks/{nb}/content")) == "host-b"
                    assert upgrade_host(proxy.port, nb, mint(host_a, nb)) == (101, "host-b")
                for nb in own:  # host-a stays in rotation for the notebooks nobody holds
                    assert host_of(client.get(f"/api/v1/notebooks/{nb}/content")) == "host-a"

            async def scenario() -> None:
                # host-b holds `held` open through sockets made directly to it (bypassing nginx).
                async with SyncClient.connect(host_b.ws_url(held[0], mint(host_b, held[0]))) as ws0, \
                        SyncClient.connect(host_b.ws_url(held[1], mint(host_b, held[1]))) as ws1:  # fmt: skip
                    await ws0.start()
                    await ws1.start()
                    for _ in range(3):
                        await trio.to_thread.run_sync(check_routes)
                    # An edit through nginx lands on the owner, next to the direct socket.
                    token = await trio.to_thread.run_sync(mint, host_a, held[0])
                    url = f"ws://127.0.0.1:{proxy.port}/api/v1/notebooks/{held[0]}/ws?token={token}"
                    async with SyncClient.connect(url) as via_proxy:
                        await via_proxy.start()
                        await via_proxy.submit([INSERT_C1])
                        await via_proxy.sync_until(1)
                    await ws0.sync_until(1)

            trio.run(scenario)
        assert "503, " in proxy.access_log()  # nginx saw the not_owner answers and retried
