"""The one public port: read each connection's request head, then route it.

The sync WebSocket (`GET /api/v1/notebooks/{id}/ws`) is served on the raw non-blocking socket
by `engine.connection` (encode once, one non-blocking write per frame per viewer). Everything
else (the HTTP API, the embed page) is handed, with the bytes already read, to hypercorn's
trio connection handler running the Quart app. One port, one process, one nursery.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from engine.framing import bad_request_response, framing_error, guard_h11

if TYPE_CHECKING:  # the gate builds on this module's streams
    from engine.gate import Gate

log = logging.getLogger("agora.listener")

SYNC_PATH = re.compile(rb"^GET /api/v1/notebooks/([^/?# ]+)/ws(?:\?[^ ]*)? HTTP/1\.1\r\n", re.IGNORECASE)
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0

SyncHandler = Callable[[socket.socket, bytes], Awaitable[None]]
HttpHandler = Callable[[trio.abc.Stream], Awaitable[None]]


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream that first returns bytes already read from it (the request head)."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self.transport = stream
        self.socket = stream.socket
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self.transport.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def setsockopt(self, *args: Any) -> None:
        self.transport.setsockopt(*args)


def close_socket(sock: socket.socket) -> None:
    """Close a socket trio may be waiting on (tell trio first)."""
    try:
        trio.lowlevel.notify_closing(sock)
    except Exception:
        pass
    sock.close()


async def read_head(sock: socket.socket) -> bytes | None:
    """Read until the end of the request head (bounded size and time); None if it never came."""
    buf = bytearray()
    with trio.move_on_after(HEAD_TIMEOUT):
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                return None
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return None
            if not data:
                return None
            buf += data
        return bytes(buf)
    return None


async def send_all(sock: socket.socket, data: bytes) -> bool:
    """Write all of `data` to a non-blocking socket; False when the peer went away first.
    The caller bounds the time."""
    view = memoryview(data)
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return False
    return True


async def drain(sock: socket.socket) -> None:
    """Half-close, then read and drop input until EOF (the caller bounds the time).

    Closing with unread input makes the kernel send a reset, which can destroy what we wrote
    last before the client reads it; reading it first lets the answer or close frame arrive.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            if not sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return


async def refuse_head(sock: socket.socket, response: bytes) -> None:
    """Send `response`, half-close, and drain what the client still sends (bounded time) so the
    close does not reset the connection before the response is read; the caller closes."""
    with trio.move_on_after(2):
        if await send_all(sock, response):
            await drain(sock)


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A non-blocking listening socket (SO_REUSEADDR; IPv6 when `host` says so)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


async def serve(
    sock: socket.socket,
    on_sync: SyncHandler,
    on_http: HttpHandler,
    *,
    gate: Gate | None = None,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on `sock`; each connection runs in this function's nursery.

    `task_status.started` hands back the accept loop's cancel scope: cancelling it closes the
    listening socket (no new connections) while open connections keep running until the
    caller cancels this task. With a `gate`, connections are counted and every head is
    screened (`engine.gate`) before anything else is read.
    """

    guard_h11()  # later requests on a kept-alive connection are framed by h11: same refusal

    async def handle(conn: socket.socket) -> None:
        handed_off = False
        admitted = gate.enter() if gate is not None else True
        try:
            head = await read_head(conn)
            if head is None:
                return
            if (why := framing_error(head)) is not None:  # request smuggling: 400 and close
                await refuse_head(conn, bad_request_response(why))
                return
            handed_off = True  # from here on the handler owns (and closes) the socket
            if gate is not None:
                refusal = gate.screen(head, admitted)
                if refusal is not None:
                    await gate.refuse(conn, refusal)
                    return
            if SYNC_PATH.match(head):
                await on_sync(conn, head)
                return
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
            http = gate.gated_stream(stream, head) if gate is not None else PrefixedStream(stream, head)
            await on_http(http)
        except Exception:  # one connection's bug must never take the listener down
            log.exception("connection handler failed")
        finally:
            if gate is not None and admitted:
                gate.leave()
            if not handed_off:
                close_socket(conn)

    async with trio.open_nursery() as nursery:
        try:
            with trio.CancelScope() as accepting:
                task_status.started(accepting)
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        conn, _ = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            log.error("accept failed (%s); pausing 100 ms", exc)
                            await trio.sleep(0.1)
                            continue
                        raise
                    conn.setblocking(False)
                    if conn.family in (socket.AF_INET, socket.AF_INET6):
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    nursery.start_soon(handle, conn)
        finally:
            close_socket(sock)
        await trio.sleep_forever()
