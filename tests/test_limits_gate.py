"""The front gate (engine/gate.py) on the real server: refusals on the request head alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.limits_support import (
    connect,
    error_code,
    read_response,
    read_until_closed,
    rss_bytes,
    running,
    wait_for,
)

MiB = 1024 * 1024


def _post_head(length: int, key: str | None = None, path: str = "/api/v1/notebooks") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{auth}\r\n"
    ).encode()


def test_unauthenticated_request_is_refused_without_its_body(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        for key in (None, "wrong-key"):
            with connect(server.port) as sock:
                sock.sendall(_post_head(30 * MiB, key))  # the body never comes
                status, headers, body = read_response(sock)
                assert status == 401
                assert error_code(body) == "unauthorized"
                assert headers["connection"] == "close"
                assert "bearer" in headers["www-authenticate"].lower()
                assert read_until_closed(sock) == b""  # and the server closes
        # a public path needs no key, a keyed request still works
        assert httpx.get(f"{server.base_url}/api/v1/openapi.json").status_code == 200
        assert httpx.get(f"{server.base_url}/api/v1/notebooks", headers=server.headers).status_code == 200


def test_body_over_the_limit_is_413_before_reading(tmp_path: Path) -> None:
    with running(tmp_path, "--http-max-body", "1MiB") as server, connect(server.port) as sock:
        sock.sendall(_post_head(MiB + 1, server.api_key))
        status, headers, body = read_response(sock)
        assert status == 413 and error_code(body) == "payload_too_large"
        assert headers["connection"] == "close"


def test_a_stalled_body_times_out_with_408(tmp_path: Path) -> None:
    with running(tmp_path, "--http-body-timeout", "0.5") as server, connect(server.port, 20) as sock:
        sock.sendall(_post_head(100, server.api_key) + b'{"name": ')
        status, _, body = read_response(sock)  # the body never completes
        assert status == 408 and error_code(body) == "request_timeout"
        # a complete request on a fresh connection is unaffected
        r = httpx.post(f"{server.base_url}/api/v1/notebooks", json={"name": "ok"}, headers=server.headers)
        assert r.status_code == 201


def test_a_request_behind_a_public_one_on_the_same_connection_is_not_served(tmp_path: Path) -> None:
    """Keep-alive cannot smuggle an unscreened request past the gate: one request per connection."""
    with running(tmp_path) as server, connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + _post_head(10, None) + b"0123456789")
        data = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200")
        assert data.count(b"HTTP/1.1 ") == 1, data


def test_http_rate_limit_per_key(tmp_path: Path) -> None:
    with running(tmp_path, "--http-rate", "0.5", "--http-burst", "3") as server:
        with httpx.Client(base_url=server.base_url, headers=server.headers) as client:
            answers = [client.get("/api/v1/notebooks") for _ in range(6)]
            assert [r.status_code for r in answers[:3]] == [200, 200, 200]
            limited = [r for r in answers if r.status_code == 429]
            assert limited, [r.status_code for r in answers]
            assert error_code(limited[0].content) == "rate_limited"
            assert int(limited[0].headers["retry-after"]) >= 1
            assert client.get("/healthz").status_code == 200  # not an API-key call


def test_dev_mode_turns_http_rate_limiting_off(tmp_path: Path) -> None:
    with running(tmp_path, "--dev", "--http-burst", "2") as server:
        url = f"{server.base_url}/api/v1/notebooks"
        codes = {httpx.get(url, headers=server.headers).status_code for _ in range(6)}
        assert codes == {200}


def _upgrade(token: str) -> bytes:
    return (
        f"GET /api/v1/notebooks/nb/ws?token={token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def test_connections_beyond_the_limit_get_503_before_any_upgrade(tmp_path: Path) -> None:
    with running(tmp_path, "--max-connections", "3") as server:
        api = httpx.Client(base_url=server.base_url, headers=server.headers)
        assert api.post("/api/v1/notebooks", json={"id": "nb"}).status_code == 201
        user = {"id": "u", "name": "U"}
        token = api.post("/api/v1/tokens", json={"notebook": "nb", "user": user, "role": "viewer"}).json()
        api.close()
        held = []
        for _ in range(3):  # three open sync connections (101 proves the server counted them)
            sock = connect(server.port)
            sock.sendall(_upgrade(token["token"]))
            assert sock.recv(12) == b"HTTP/1.1 101"
            held.append(sock)
        with connect(server.port) as sock:
            sock.sendall(_upgrade(token["token"]))
            status, headers, body = read_response(sock)
            assert status == 503 and error_code(body) == "too_many_connections"
            assert "retry-after" in headers
        held.pop().close()

        def healthy() -> bool:
            try:
                return httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy), "a freed slot is usable again"
        for sock in held:
            sock.close()


def test_unauthenticated_uploads_do_not_grow_memory(tmp_path: Path) -> None:
    """16 concurrent unauthenticated 8 MiB uploads: the server reads none of them into memory
    (before the gate every body was buffered: growth >= 128 MiB)."""
    body = b"x" * (8 * MiB)
    with running(tmp_path) as server:
        assert server.proc is not None
        before = rss_bytes(server.proc.pid)
        peak = before
        statuses: list[int] = []

        def upload() -> None:
            with connect(server.port) as sock:
                try:
                    sock.sendall(_post_head(len(body)) + body)
                except OSError:
                    pass  # the server may close once it has answered
                try:
                    statuses.append(read_response(sock)[0])
                except OSError:
                    statuses.append(-1)

        threads = [threading.Thread(target=upload) for _ in range(16)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_bytes(server.proc.pid))
            time.sleep(0.01)
        assert statuses.count(401) == 16, statuses
        assert peak - before < 64 * MiB, (before, peak)
