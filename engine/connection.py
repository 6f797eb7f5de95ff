"""One sync WebSocket connection (contract §4): handshake, authorisation, reading, closing.

Writing belongs to `engine.fanout.Peer`: this module only reads. The handshake and incoming
frames go through wsproto; outgoing frames are pre-built bytes. Per-connection compression is
never negotiated (no extensions are offered back), so every viewer gets identical bytes.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from engine import metrics
from engine.auth.tokens import TokenClaims, TokenError, verify_token
from engine.errors import EngineError, NotFound
from engine.fanout import FanoutLimits, Peer, PeerClosed
from engine.gate import drain_and_close
from engine.kernels import KernelService
from engine.listener import close_socket
from engine.room import Member, Room
from protocol import (
    DEFAULT_LIMITS,
    Error,
    ExecuteMessage,
    InputReplyMessage,
    InterruptMessage,
    Limits,
    OpMessage,
    PingMessage,
    Pong,
    PresenceMessage,
    ProtocolError,
    Reject,
    decode_client,
    encode,
    wsframe,
)
from protocol.limits import CLIENT_ID_RE, NOTEBOOK_ID_RE

log = logging.getLogger("agora.sync")

PONG = wsframe.text_frame(encode(Pong()))
_VERSION_RE = re.compile(r"\A[0-9]{1,15}\Z")
_REFUSALS = {401: 4401, 403: 4403, 404: 4404}  # engine error status -> close code at connect
SEND_BUFFER = 64 * 1024  # small, so a stalled reader is noticed in seconds, not minutes


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """What the sync endpoint needs besides the rooms."""

    secret: bytes
    limits: Limits = DEFAULT_LIMITS
    fanout: FanoutLimits = field(default_factory=FanoutLimits)
    rate: float = 200.0  # messages per second per connection, sustained
    burst: float = 400.0  # messages a connection may send at once
    byte_rate: float = 1024 * 1024  # message bytes per second per connection, sustained
    byte_burst: float = 4 * 1024 * 1024  # message bytes a connection may send at once
    handshake_timeout: float = 10.0
    kernels: KernelService | None = None  # None: execute/interrupt answer `kernels_unavailable`
    host_id: str = ""  # sent as X-Agora-Host in the handshake answer when set


def _error_frame(code: str, message: str) -> bytes:
    return wsframe.text_frame(encode(Error(code, message)))


class _Bucket:
    """A token bucket: `take` says how long to wait before reading the next message.

    The debt of an oversized take is paid by waiting; the bucket never refuses.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, amount: float = 1.0) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


async def _send_all_now(sock: socket.socket, data: bytes, timeout: float) -> bool:
    """Blocking-style write used only before the peer exists (handshake responses)."""
    view = memoryview(data)
    with trio.move_on_after(timeout):
        while view:
            await trio.lowlevel.wait_writable(sock)
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return False
            view = view[sent:]
        return True
    return False


async def _linger_close(sock: socket.socket, pending: list[memoryview], timeout: float = 2.0) -> None:
    """Write what a closing peer still owes (the rest of a frame, the close frame), half-close,
    drain what the client still sends, then close; all within `timeout` seconds.

    Closing with unread input makes the kernel send a reset, which can destroy the close frame
    we just wrote before the client reads it; draining first lets the close code arrive.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
        for chunk in pending:
            view = chunk
            while view:
                # Read while waiting to write: a client busy sending (a flood, an oversized
                # message) must be drained, or its full window blocks both directions.
                try:
                    view = view[sock.send(view) :]
                    continue
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    break
                await _wait_writable_draining(sock)
        await drain_and_close(sock)
    close_socket(sock)


async def _wait_writable_draining(sock: socket.socket) -> None:
    """Wait until `sock` is writable, reading and dropping its input meanwhile."""
    async with trio.open_nursery() as nursery:

        async def drop_input() -> None:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    if not sock.recv(65536):
                        await trio.sleep_forever()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    await trio.sleep_forever()

        nursery.start_soon(drop_input)
        await trio.lowlevel.wait_writable(sock)
        nursery.cancel_scope.cancel()


async def serve_sync(
    sock: socket.socket, head: bytes, room_for: Callable[[str, TokenClaims], Any], config: SyncConfig
) -> None:
    """Run one sync connection to its end and close its socket. `room_for` is `Engine.admit`:
    the room a verified token may join, or an `EngineError` (404 → 4404, 403 → 4403,
    401 → 4401, anything else → 1011)."""
    closing: list[memoryview] = []
    try:
        await _serve_sync(sock, head, room_for, config, closing)
    finally:
        await _linger_close(sock, closing)


async def _serve_sync(
    sock: socket.socket,
    head: bytes,
    room_for: Callable[[str, TokenClaims], Any],
    config: SyncConfig,
    closing: list[memoryview],
) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(head)
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
    except RemoteProtocolError as exc:
        await _send_all_now(sock, ws.send(exc.event_hint) if exc.event_hint else b"", 2)
        return
    if request is None:
        return
    target = urlsplit(request.target)
    notebook_id = target.path.split("/")[4]
    query = {k: v[-1] for k, v in parse_qs(target.query).items()}
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    host = [(b"x-agora-host", config.host_id.encode("latin-1", "replace"))] if config.host_id else []
    accept = AcceptConnection(extra_headers=host)
    if not await _send_all_now(sock, ws.send(accept), config.handshake_timeout):
        return

    async def refuse(close: int, code: str, message: str) -> None:
        await _send_all_now(sock, _error_frame(code, message) + wsframe.close_frame(close, message), 2)

    try:
        claims = verify_token(config.secret, query.get("token", ""), now=time.time())
    except TokenError as exc:
        await refuse(4401, exc.code, exc.message)
        return
    if not NOTEBOOK_ID_RE.match(notebook_id) or claims.notebook != notebook_id:
        await refuse(4403, "wrong_notebook", "this token is for another notebook")
        return
    client = query.get("client") or secrets.token_urlsafe(12)
    since_text = query.get("since")
    if not CLIENT_ID_RE.match(client) or (since_text is not None and not _VERSION_RE.match(since_text)):
        await refuse(4400, "invalid_query", "client must match [A-Za-z0-9_-]{1,64} and since be a version")
        return
    since = int(since_text) if since_text is not None else None
    try:
        room: Room = await room_for(notebook_id, claims)
    except NotFound as exc:
        await refuse(4404, "notebook_gone", exc.message)
        return
    except EngineError as exc:  # not_owner: another host took it meanwhile, reconnect (1012)
        close = 1012 if exc.code == "not_owner" else _REFUSALS.get(exc.status, 1011)
        await refuse(close, exc.code, exc.message)
        return

    peer = Peer(sock, config.fanout)
    kernels = config.kernels
    greeting = (lambda: kernels.frame(notebook_id) or b"") if kernels is not None else None
    user = dict(claims.user)
    member = Member(
        peer=peer, role=claims.role, client=client, user=user, issued=claims.issued, greeting=greeting
    )
    peer.on_close = lambda _peer: room.detach(member)
    try:
        with peer.cancel_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_writer, peer)
                await room.join(member, since)
                await _read_loop(ws, sock, peer, member, room, config)
                peer.close(None, "")
    except EngineError as exc:
        peer.send_private(_error_frame(exc.code, exc.message))
        peer.close(1011, exc.message)
    finally:
        room.detach(member)
        closing.extend(peer.pending_close)


async def _writer(peer: Peer) -> None:
    try:
        await peer.writer()
    except PeerClosed:
        pass


async def _read_loop(
    ws: WSConnection, sock: socket.socket, peer: Peer, member: Member, room: Room, config: SyncConfig
) -> None:
    bucket = _Bucket(config.rate, config.burst)
    byte_bucket = _Bucket(config.byte_rate, config.byte_burst)
    parts: list[str] = []
    size = 0
    limit = config.limits.max_message_bytes
    while not peer.closed:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return
        if not data:
            return
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    size += len(event.data)  # code points <= bytes: a cheap early bound
                    if size > limit:
                        _fail(peer, 4413, "message_too_large", f"a message may be at most {limit} bytes")
                        return
                    if not event.message_finished:
                        continue
                    text = parts[0] if len(parts) == 1 else "".join(parts)
                    parts.clear()
                    delay = max(bucket.take(), byte_bucket.take(len(text.encode("utf-8", "surrogatepass"))))
                    size = 0
                    if delay:
                        await trio.sleep(delay)  # back-pressure: a flooding client is read slower
                    await _handle(text, peer, member, room, config)
                    if peer.closed:
                        return
                elif isinstance(event, BytesMessage):
                    _fail(peer, 4400, "binary_frame", "only text frames are part of the protocol")
                    return
                elif isinstance(event, Ping):
                    peer.send_private(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    try:
                        peer.send_private(ws.send(event.response()))
                    except Exception:
                        pass
                    return
                elif isinstance(event, RejectConnection):
                    return
        except RemoteProtocolError as exc:
            _fail(peer, 1002, "websocket_protocol_error", str(exc))
            return


def _fail(peer: Peer, close: int, code: str, message: str) -> None:
    peer.send_private(_error_frame(code, message))
    peer.close(close, message)


async def _handle(text: str, peer: Peer, member: Member, room: Room, config: SyncConfig) -> None:
    try:
        message = decode_client(text, config.limits)
    except ProtocolError as exc:
        if exc.close_code is None and exc.seq is not None and member.role != "editor":
            _fail(peer, 4403, "forbidden", "viewers may only send ping")
        elif exc.close_code is None and exc.seq is not None:
            metrics.REJECTS.labels(exc.code).inc()
            peer.send_private(wsframe.text_frame(encode(Reject.from_error(exc))))
        else:
            _fail(peer, exc.close_code or 4400, exc.code, exc.message)
        return
    if isinstance(message, PingMessage):
        peer.send_private(PONG)
    elif member.role != "editor":
        _fail(peer, 4403, "forbidden", "viewers may only send ping")
    elif isinstance(message, OpMessage):
        await room.submit(member, message.seq, message.base, message.op)
    elif isinstance(message, PresenceMessage):
        room.set_cursor(member, message.cursor)
    else:
        await _kernel_message(message, peer, room, config.kernels)


async def _kernel_message(
    message: ExecuteMessage | InterruptMessage | InputReplyMessage,
    peer: Peer,
    room: Room,
    kernels: KernelService | None,
) -> None:
    """execute / interrupt / input_reply from an editor. Refusals are `error` frames that do not
    close the connection (the kernel limit is a passing condition)."""
    if kernels is None:
        peer.send_private(_error_frame("kernels_unavailable", "this server does not run kernels"))
        return
    try:
        if isinstance(message, ExecuteMessage):
            await kernels.execute(room.id, message.cells, peer)
        elif isinstance(message, InterruptMessage):
            await kernels.interrupt(room.id)
        elif not kernels.answer_input(room.id, peer, message.value):
            peer.send_private(_error_frame("no_input_pending", "no input() of yours is waiting"))
    except EngineError as exc:
        peer.send_private(_error_frame(exc.code, exc.message))
