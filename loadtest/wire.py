"""The client end of the sync WebSocket, by hand, for the load generator.

Raw non-blocking stdlib sockets driven by trio (`wait_readable` / `wait_writable`), a
hand-written HTTP upgrade, masked client frames (RFC 6455 §5.3) and an incremental parser for
the server's unmasked frames. Nothing here parses JSON: the cheap viewers only find frame
boundaries, the probes and editors decode what they need themselves.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from urllib.parse import urlencode

import trio

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WireError(Exception):
    """The connection failed, was refused or was closed (`code` is the close code if any)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def close_sock(sock: socket.socket) -> None:
    """Close a socket trio may be waiting on (tell trio first)."""
    try:
        trio.lowlevel.notify_closing(sock)
    except Exception:
        pass
    sock.close()


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final client frame: masked with a fresh random key, as RFC 6455 requires."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    if n:
        k = (key * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
    else:
        body = b""
    return header + key + body


def close_frame(code: int = 1000) -> bytes:
    return masked_frame(struct.pack("!H", code), OP_CLOSE)


async def send_all(sock: socket.socket, data: bytes, timeout: float = 10.0) -> None:
    """Write everything (waiting for the socket when it is full) or raise `WireError`."""
    view = memoryview(data)
    with trio.move_on_after(timeout):
        while view:
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                raise WireError(f"send failed: {exc}") from exc
            view = view[sent:]
        return
    raise WireError("send timed out")


async def connect(
    port: int, notebook: str, token: str, timeout: float = 30.0, **params: object
) -> tuple[socket.socket, bytes]:
    """Open the sync socket: TCP connect + upgrade. Returns the socket and the bytes already
    received after the response head (usually the start of the welcome frame)."""
    query = urlencode({"token": token, **{k: str(v) for k, v in params.items() if v is not None}})
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /api/v1/notebooks/{notebook}/ws?{query} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        with trio.fail_after(timeout):
            err = sock.connect_ex(("127.0.0.1", port))
            if err not in (0, 115):  # 115: EINPROGRESS
                raise WireError(f"connect failed: {os.strerror(err)}")
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise WireError(f"connect failed: {os.strerror(err)}")
            await send_all(sock, request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    raise WireError("closed during the handshake")
                buf += data
    except trio.TooSlowError:
        close_sock(sock)
        raise WireError("handshake timed out") from None
    except (WireError, OSError) as exc:
        close_sock(sock)
        raise WireError(str(exc)) from None
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        close_sock(sock)
        raise WireError(f"upgrade refused: {head.splitlines()[0]!r}")
    return sock, rest


async def recv(sock: socket.socket) -> bytes:
    """The next bytes from the socket (b"" at EOF, also on a reset)."""
    while True:
        try:
            return sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            await trio.lowlevel.wait_readable(sock)
        except OSError:
            return b""


class FrameReader:
    """Splits the server's byte stream into `(opcode, payload)` frames (server frames are unmasked
    and final; continuation frames are passed through as they come)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                start = pos + 2
                n = b1
            elif b1 == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if end < start + n:
                break
            out.append((buf[pos] & 0x0F, bytes(buf[start : start + n])))
            pos = start + n
        if pos:
            del buf[:pos]
        return out


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def now() -> float:
    """CLOCK_MONOTONIC: system-wide on Linux, so comparable between the load processes."""
    return time.monotonic()


async def wait_until(predicate: Callable[[], bool], interval: float = 0.02) -> None:
    """Poll `predicate` until it holds (callers bound the wait with a cancel scope)."""
    while True:
        if predicate():
            return
        await trio.sleep(interval)
