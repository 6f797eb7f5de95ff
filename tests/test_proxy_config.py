"""`agora proxy-config` (contract §7): the generated nginx.conf, checked by Debian's real nginx in
front of real Agora hosts (tests/server_process.py, file store, one data dir each, one shared
AGORA_SECRET and API key). Routing by notebook, WebSockets through the proxy, a killed host's
notebooks moving at once, and nginx's failure accounting around `not_owner` 503 answers.
"""

from __future__ import annotations

import http.server
import os
import pwd
import re
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from engine.proxyconf import EndpointError, ProxySettings, parse_endpoint, render
from tests.cluster import (
    HOST_HEADER,
    HOSTS,
    host_of,
    mint,
    notebook_hosts,
    running_cluster,
    start_hosts,
    stop_hosts,
    upgrade_host,
)
from tests.nginx_process import NginxProcess, running_proxy
from tests.server_process import ROOT, ServerProcess
from tests.wsclient import SyncClient

INSERT_C1 = {"t": "cell_insert", "id": "c1", "pos": "m", "cell": {"cell_type": "code", "source": "hello"}}
IDS = [f"nb-{i:02d}" for i in range(30)]


# ---- the generator on its own ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("[::1]:80", "[::1]:80"),
        ("agora-1.internal:08001", "agora-1.internal:8001"),
    ],
)
def test_endpoints_accepted(text: str, expected: str) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "8000", "host", "host:", "host:0", "host:65536", "a b:80", "x;y:80", "h:80;", "h}:1", "::1:80"],
)
def test_endpoints_refused(text: str) -> None:
    with pytest.raises(EndpointError):
        parse_endpoint(text)


def test_settings_refused() -> None:
    with pytest.raises(ValueError, match="upstream"):
        ProxySettings(listen="127.0.0.1:80", upstreams=())
    with pytest.raises(ValueError, match="once"):
        ProxySettings(listen="127.0.0.1:80", upstreams=("h:1", "h:1"))
    with pytest.raises(ValueError, match="tries"):
        ProxySettings(listen="127.0.0.1:80", upstreams=("h:1",), tries=0)


def _block(conf: str, head: str) -> str:
    start = conf.index(head)
    return conf[start : conf.index("}", start)]


def test_rendered_routing_and_accounting() -> None:
    ups = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")
    conf = render(ProxySettings(listen="0.0.0.0:8080", upstreams=ups))
    assert conf == render(ProxySettings(listen="0.0.0.0:8080", upstreams=ups))  # deterministic
    owner = _block(conf, "upstream agora_notebooks {")
    assert "hash $agora_notebook consistent;" in owner
    assert [line.split()[1] for line in owner.splitlines() if "server " in line] == list(ups)
    assert all("max_fails=0" in line for line in owner.splitlines() if "server " in line)
    assert not re.search(r"^\s*keepalive\s", conf, re.M)
    assert "proxy_next_upstream_tries 3;" in conf
    assert "proxy_next_upstream error timeout http_503" in conf
    # Nothing logged that can hold a query string (the socket URL carries ?token=).
    log_format = conf[conf.index("log_format") : conf.index(";", conf.index("log_format"))]
    for leak in (
        "$request ",
        '$request"',
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
        "$http_referer",
    ):
        assert leak not in log_format
    # Every file path is relative (under the prefix).
    for directive in (
        "pid",
        "error_log",
        "access_log",
        *(f"{t}_temp_path" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
    ):
        match = re.search(rf"^\s*{directive} (\S+)", conf, re.M)
        assert match and not match.group(1).startswith("/"), directive


def test_cli_prints_the_rendered_config() -> None:
    args = ["--listen", "127.0.0.1:8080", "--upstream", "127.0.0.1:8001", "--upstream", "127.0.0.1:8002"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "proxy-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    expected = render(
        ProxySettings(listen="127.0.0.1:8080", upstreams=("127.0.0.1:8001", "127.0.0.1:8002")),
        "agora proxy-config " + " ".join(args),
    )
    assert out == expected


@pytest.mark.parametrize(
    "args",
    [
        ["--listen", "127.0.0.1:8080"],
        ["--listen", "127.0.0.1", "--upstream", "127.0.0.1:8001"],
        ["--listen", "127.0.0.1:8080", "--upstream", "x;include /etc/passwd:1"],
        ["--listen", "127.0.0.1:8080", "--upstream", "h:1", "--upstream", "h:1"],
    ],
)
def test_cli_refuses_bad_input(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "proxy-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr and done.stderr.strip()


def test_deploy_example_is_what_the_cli_prints() -> None:
    """deploy/nginx/nginx.conf is generated, never edited: its first line says how."""
    example = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    argv = example.splitlines()[0].removeprefix("# Generated by: agora ").split()
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out == example


# ---- nginx itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upstreams", [["127.0.0.1:1"], ["127.0.0.1:1", "[::1]:2", "localhost:3"]], ids=["one", "mixed"]
)
def test_nginx_accepts_the_config(upstreams: list[str]) -> None:
    proxy = NginxProcess(upstreams=upstreams)
    try:
        done = proxy.check()
        assert done.returncode == 0, done.stderr
        assert "syntax is ok" in done.stderr
    finally:
        proxy.cleanup()


def test_starts_unprivileged_from_an_empty_prefix() -> None:
    """As root, nginx runs as `nobody` here: any path outside the prefix (Debian's /var/lib/nginx
    temp dirs, /var/log/nginx, /run/nginx.pid) would be unwritable and stop it."""
    user = "nobody" if os.geteuid() == 0 else None
    if user is not None:
        pwd.getpwnam(user)
    with running_proxy(["127.0.0.1:1"], user=user) as proxy:
        assert sorted(p.name for p in proxy.prefix.iterdir()) == sorted(
            [
                "nginx.conf",
                "stderr.log",
                "nginx.pid",
                "error.log",
                "access.log",
                "client_body_temp",
                "proxy_temp",
                "fastcgi_temp",
                "uwsgi_temp",
                "scgi_temp",
            ]
        )
        assert int((proxy.prefix / "nginx.pid").read_text()) == proxy.proc.pid  # type: ignore[union-attr]
        # No host answers: nginx's own 503 in the API's error shape.
        resp = httpx.get(f"{proxy.base_url}/healthz", timeout=10)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"
        assert resp.headers["Retry-After"] == "1"
    assert "/var/" not in proxy.log()


# ---- real hosts behind nginx -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NginxProcess, list[ServerProcess]]]:
    """Three hosts behind one nginx, shared by the tests that leave every host running."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as proxy_and_hosts:
        yield proxy_and_hosts


def test_host_id_header_and_healthz_through_the_proxy(
    cluster: tuple[NginxProcess, list[ServerProcess]],
) -> None:
    proxy, hosts = cluster
    for host, name in zip(hosts, HOSTS, strict=True):  # directly: each host names itself
        resp = httpx.get(f"{host.base_url}/healthz")
        assert resp.headers[HOST_HEADER] == name and resp.json() == {"status": "ok", "host": name}
    seen = Counter(host_of(httpx.get(f"{proxy.base_url}/healthz", timeout=10)) for _ in range(30))
    assert set(seen) == set(HOSTS), seen  # other paths: any host (round robin)


def test_every_path_of_a_notebook_lands_on_one_host(
    cluster: tuple[NginxProcess, list[ServerProcess]],
) -> None:
    proxy, hosts = cluster
    with httpx.Client(base_url=proxy.base_url, headers=hosts[0].headers, timeout=10) as client:
        placement = notebook_hosts(client, IDS)
        assert set(placement.values()) == set(HOSTS), Counter(placement.values())  # spread over all
        for nb in IDS[:10]:
            paths = [
                f"/api/v1/notebooks/{nb}/content",
                f"/api/v1/notebooks/{nb}/history",
                f"/api/v1/notebooks/{nb}/sessions",
                f"/api/v1/notebooks/{nb}?x=1",
                f"/embed/{nb}",
            ]
            assert {host_of(client.get(p)) for p in paths} == {placement[nb]}, nb
            assert host_of(client.delete(f"/api/v1/notebooks/{nb}/sessions/u1")) == placement[nb]
            status, host = upgrade_host(proxy.port, nb)
            assert (status, host) == (101, placement[nb])
        assert notebook_hosts(client, IDS) == placement  # stable


def test_socket_and_api_through_the_proxy(cluster: tuple[NginxProcess, list[ServerProcess]]) -> None:
    proxy, hosts = cluster
    by_name = dict(zip(HOSTS, hosts, strict=True))
    with httpx.Client(base_url=proxy.base_url, headers=hosts[0].headers, timeout=30) as client:
        nb = "live-1"
        owner = by_name[host_of(client.get(f"/api/v1/notebooks/{nb}"))]
        # File store: the notebook lives on the host nginx routes it to.
        created = httpx.post(f"{owner.base_url}/api/v1/notebooks", headers=owner.headers, json={"id": nb})
        assert created.status_code == 201, created.text
        token = mint(owner, nb)

        async def edit() -> None:
            url = f"ws://127.0.0.1:{proxy.port}/api/v1/notebooks/{nb}/ws?token={token}&client=c-proxy"
            async with SyncClient.connect(url) as ws:
                await ws.start()
                await ws.submit([INSERT_C1])
                await ws.sync_until(1)

        trio.run(edit)
        content = client.get(f"/api/v1/notebooks/{nb}/content")
        assert content.status_code == 200
        assert [c["source"] for c in content.json()["cells"]] == ["hello"]
        # A big owner-path body goes through nginx's buffer (a file under the prefix, written by
        # the `nobody` worker when started as root) and the server reads all of it.
        nbjson = content.json()
        nbjson["cells"][0]["source"] = "x" * (3 * 1024 * 1024)
        put = client.put(f"/api/v1/notebooks/{nb}/content", json={"notebook": nbjson})
        assert put.status_code == 200, put.text[:300]
        assert host_of(put) == host_of(content)
        too_big = client.put(f"/api/v1/notebooks/{nb}/content", content=b"x" * (33 * 1024 * 1024))
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "payload_too_large"
    log = proxy.access_log()
    assert f'/api/v1/notebooks/{nb}/ws HTTP/1.1" 101' in log
    assert token not in log and "token=" not in log


def test_a_killed_hosts_notebooks_move_at_once(tmp_path: Path) -> None:
    hosts = start_hosts(tmp_path)
    by_name = dict(zip(HOSTS, hosts, strict=True))
    try:
        # connect_timeout 10 s: a move in well under that is the refused connection, not a timeout.
        with (
            running_proxy([h.port for h in hosts], connect_timeout=10) as proxy,
            httpx.Client(base_url=proxy.base_url, headers=hosts[0].headers, timeout=30) as client,
        ):
            before = notebook_hosts(client, IDS)
            victim = before[IDS[0]]
            by_name[victim].kill9()
            moved = [nb for nb in IDS if before[nb] == victim]
            started = time.monotonic()
            after = notebook_hosts(client, IDS)
            elapsed = time.monotonic() - started
            assert elapsed < 5, elapsed
            assert victim not in after.values()
            assert {nb: after[nb] for nb in IDS if nb not in moved} == {
                nb: before[nb] for nb in IDS if nb not in moved
            }  # consistent hashing: only the dead host's notebooks move
            for nb in moved[:5]:
                status, host = upgrade_host(proxy.port, nb)
                assert (status, host) == (101, after[nb])
                assert host_of(client.get(f"/api/v1/notebooks/{nb}/content")) == after[nb]
            for _ in range(10):
                assert host_of(client.get("/healthz")) != victim
            # The new host serves a socket for a moved notebook.
            nb = moved[0]
            new_owner = by_name[after[nb]]
            created = httpx.post(
                f"{new_owner.base_url}/api/v1/notebooks", headers=new_owner.headers, json={"id": nb}
            )
            assert created.status_code == 201
            token = mint(new_owner, nb)

            async def edit() -> None:
                url = f"ws://127.0.0.1:{proxy.port}/api/v1/notebooks/{nb}/ws?token={token}"
                async with SyncClient.connect(url) as ws:
                    await ws.start()
                    await ws.submit([INSERT_C1])
                    await ws.sync_until(1)

            trio.run(edit)
    finally:
        stop_hosts(hosts)


# ---- nginx's accounting around not_owner -----------------------------------------------------


class _OwnerStub(http.server.ThreadingHTTPServer):
    """Stands in for a host that holds some notebooks and answers `not_owner` for others (the
    lease logic itself is tested with PostgreSQL elsewhere): what is under test is nginx."""

    daemon_threads = True

    def __init__(self) -> None:
        self.foreign: set[str] = set()
        self.seen: Counter[str] = Counter()
        super().__init__(("127.0.0.1", 0), _OwnerStubHandler)


class _OwnerStubHandler(http.server.BaseHTTPRequestHandler):
    server: _OwnerStub

    def do_GET(self) -> None:
        nb = self.path.split("/")[4] if self.path.startswith("/api/v1/notebooks/") else ""
        self.server.seen[nb] += 1
        if nb in self.server.foreign:
            status, body = 503, b'{"error":{"code":"not_owner","message":"another host has it"}}'
        else:
            status, body = 200, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(HOST_HEADER, "stub")
        if status == 503:
            self.send_header("Retry-After", "1")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_not_owner_answers_never_take_a_healthy_host_out(tmp_path: Path) -> None:
    stub = _OwnerStub()
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    hosts = start_hosts(tmp_path, ("host-a",))
    try:
        with (
            running_proxy([hosts[0].port, stub.server_address[1]]) as proxy,
            httpx.Client(base_url=proxy.base_url, headers=hosts[0].headers, timeout=30) as client,
        ):
            placement = notebook_hosts(client, IDS)
            on_stub = [nb for nb in IDS if placement[nb] == "stub"]
            assert len(on_stub) >= 4, placement
            foreign, owned = on_stub[: len(on_stub) // 2], on_stub[len(on_stub) // 2 :]
            stub.foreign.update(foreign)
            for _ in range(3):
                for nb in foreign:  # the stub says not_owner: nginx retries on host-a at once
                    resp = client.get(f"/api/v1/notebooks/{nb}")
                    assert host_of(resp) == "host-a"
                    status, host = upgrade_host(proxy.port, nb)
                    assert (status, host) == (101, "host-a")
                for nb in owned:  # ... and still sends the stub its own notebooks
                    assert host_of(client.get(f"/api/v1/notebooks/{nb}")) == "stub"
            assert all(stub.seen[nb] >= 6 for nb in foreign)
    finally:
        stop_hosts(hosts)
        stub.shutdown()
        stub.server_close()


# ---- TLS -------------------------------------------------------------------------------------


def test_tls_in_front_of_the_hosts(cluster: tuple[NginxProcess, list[ServerProcess]], tmp_path: Path) -> None:
    proxy, hosts = cluster
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tls = ssl.create_default_context(cafile=str(cert))
    with running_proxy([h.port for h in hosts], tls_cert=str(cert), tls_key=str(key)) as tls_proxy:
        assert tls_proxy.base_url.startswith("https://")
        with httpx.Client(
            base_url=tls_proxy.base_url, headers=hosts[0].headers, verify=tls, timeout=10
        ) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            with httpx.Client(base_url=proxy.base_url, headers=hosts[0].headers, timeout=10) as plain:
                assert notebook_hosts(client, IDS[:10]) == notebook_hosts(plain, IDS[:10])  # same ring
            nb = IDS[0]
            assert upgrade_host(tls_proxy.port, nb, tls=tls) == (
                101,
                host_of(client.get(f"/api/v1/notebooks/{nb}")),
            )
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{tls_proxy.port}/healthz", timeout=10).raise_for_status()
