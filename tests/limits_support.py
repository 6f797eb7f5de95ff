"""Helpers for the limits tests: servers with extra flags, raw HTTP over plain sockets, RSS."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from tests.server_process import ServerProcess, running_server


@contextmanager
def running(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A real server started with extra `serve` flags; stopped afterwards (log must stay clean)."""
    with running_server(tmp_path / "data", *args, env=env) as proc:
        yield proc


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A blocking loopback connection with a read timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (or `limit` bytes, or the socket's timeout)."""
    out = bytearray()
    try:
        while len(out) < limit:
            data = sock.recv(65536)
            if not data:
                break
            out += data
    except (TimeoutError, ConnectionResetError):
        pass
    return bytes(out)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers lower-cased, body)."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response head: {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return status, headers, bytes(body[:length])


def error_code(body: bytes) -> str:
    """The `error.code` of a JSON error body (asserting the contract's shape)."""
    data = orjson.loads(body)
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}, data
    return str(data["error"]["code"])


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout` seconds passed; returns its last value."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
