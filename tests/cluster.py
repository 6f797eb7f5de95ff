"""Several real Agora hosts behind nginx, for tests and benches (contract §7).

    with running_cluster(tmp_path) as (proxy, hosts):          # three hosts, file store
        httpx.get(f"{proxy.base_url}/healthz").headers["X-Agora-Host"]   # "host-a" / "host-b" / …

    hosts = start_hosts(tmp_path, ("h1", "h2"), extra_env={"AGORA_STORE": dsn})  # shared store
    proxy = start_proxy([h.port for h in hosts])               # tests/nginx_process.py
    ...; proxy.cleanup(); stop_hosts(hosts)

Each host has its own data dir, the same AGORA_SECRET and API key (ServerProcess defaults) and
`AGORA_HOST_ID` = its name, which every answer carries as `X-Agora-Host`: that is how a test sees
where nginx sent a request.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.nginx_process import NginxProcess, running_proxy
from tests.server_process import ServerProcess

HOSTS = ("host-a", "host-b", "host-c")
HOST_HEADER = "X-Agora-Host"


def start_hosts(
    base: Path,
    names: Sequence[str] = HOSTS,
    *,
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> list[ServerProcess]:
    """Started hosts under `base/<name>/`, one data dir each, one secret and one API key, named by
    AGORA_HOST_ID; `extra_env`/`extra_args` go to every host (e.g. AGORA_STORE)."""
    hosts: list[ServerProcess] = []
    try:
        for name in names:
            (base / name).mkdir(parents=True)
            host = ServerProcess(
                data_dir=base / name / "data",
                extra_env={**(extra_env or {}), "AGORA_HOST_ID": name},
                extra_args=list(extra_args),
            )
            host.start()
            hosts.append(host)
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def stop_hosts(hosts: list[ServerProcess]) -> None:
    """Stop every host still running; their logs must hold no traceback."""
    for host in hosts:
        if host.proc is not None and host.proc.poll() is None:
            host.stop()
    for host in hosts:
        assert "Traceback" not in host.log(), host.log()[-4000:]


@contextmanager
def running_cluster(
    base: Path,
    names: Sequence[str] = HOSTS,
    *,
    extra_env: Mapping[str, str] | None = None,
    **proxy_options: object,
) -> Iterator[tuple[NginxProcess, list[ServerProcess]]]:
    """Hosts `names` behind one nginx (`proxy_options` as for `running_proxy`); all stopped after."""
    hosts = start_hosts(base, names, extra_env=extra_env)
    try:
        with running_proxy([h.port for h in hosts], **proxy_options) as proxy:
            yield proxy, hosts
    finally:
        stop_hosts(hosts)


def host_of(resp: httpx.Response) -> str:
    """The host that answered (asserting it was not a 5xx)."""
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    return resp.headers[HOST_HEADER]


def upgrade_host(
    port: int, notebook_id: str, token: str = "x", tls: ssl.SSLContext | None = None
) -> tuple[int, str]:
    """A raw WebSocket handshake through `port`: (status, X-Agora-Host of the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        sock.sendall(
            f"GET /api/v1/notebooks/{notebook_id}/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get(HOST_HEADER.lower(), "")


def mint(host: ServerProcess, nb: str) -> str:
    """An editor token, minted where the notebook is (the file store is per host; with a shared
    store any host would do, as every host signs with the same AGORA_SECRET)."""
    resp = httpx.post(
        f"{host.base_url}/api/v1/tokens",
        headers=host.headers,
        json={"notebook": nb, "user": {"id": "u1"}, "role": "editor"},
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def notebook_hosts(client: httpx.Client, ids: Sequence[str]) -> dict[str, str]:
    """Where `client` (pointed at the proxy) gets `GET /api/v1/notebooks/{id}` answered, per id."""
    return {nb: host_of(client.get(f"/api/v1/notebooks/{nb}")) for nb in ids}
