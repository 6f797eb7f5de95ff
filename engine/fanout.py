"""Encode once, write many: shared frames, per-connection cursors, slow-consumer policy.

A room appends each shared frame (ops or presence, already WebSocket-framed bytes) to its
`FrameLog` once. Every connection (`Peer`) has a cursor into that log. Publishing walks the
peers that are caught up and writes the very same bytes to each with one non-blocking `send`;
only a peer whose socket buffer is full gets work for its own writer task, which then sends
from its cursor (and its few private messages) as the socket drains. A peer that falls more
than `max_lag_frames` or `max_lag_bytes` behind, or makes no write progress for
`write_timeout` seconds, is cut with close code 4408 and resumes with `since`.

Memory per caught-up peer: a cursor and an empty deque; no frame is ever copied per peer.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from engine import metrics
from protocol.wsframe import close_frame

_WOULD_BLOCK = (BlockingIOError, InterruptedError)


@dataclass(frozen=True, slots=True)
class FanoutLimits:
    """The slow-consumer policy (contract §6, "bounded cost")."""

    max_lag_frames: int = 64
    max_lag_bytes: int = 256 * 1024
    max_private_bytes: int = 8 * 1024 * 1024  # welcome snapshots can be large; pings cannot
    max_private_items: int = 64
    write_timeout: float = 5.0
    retain_frames: int = 256  # frames kept for lagging peers; a peer older than that is cut


class FrameLog:
    """The room's shared frames, numbered from 0; keeps the newest `retain` of them."""

    def __init__(self, retain: int) -> None:
        self._frames: deque[bytes] = deque()
        self._sizes: deque[int] = deque()
        self._first = 0  # number of the oldest retained frame
        self._retain = retain

    @property
    def head(self) -> int:
        """The number the next appended frame will get (= one past the newest)."""
        return self._first + len(self._frames)

    def append(self, frame: bytes) -> int:
        """Add a frame; returns its number. Drops the oldest beyond the retention bound."""
        self._frames.append(frame)
        self._sizes.append(len(frame))
        if len(self._frames) > self._retain:
            self._frames.popleft()
            self._sizes.popleft()
            self._first += 1
        return self.head - 1

    def get(self, number: int) -> bytes | None:
        """Frame `number`, or None when it was already dropped (the reader is too far behind)."""
        index = number - self._first
        if index < 0 or index >= len(self._frames):
            return None
        return self._frames[index]

    def bytes_after(self, number: int) -> int:
        """Total size of frames from `number` to the head (a lagging peer's backlog)."""
        start = max(0, number - self._first)
        return sum(self._sizes[i] for i in range(start, len(self._sizes)))


class PeerClosed(Exception):
    """Raised inside a peer's own tasks once it has been closed."""


class Peer:
    """One sync WebSocket connection's sending side, over a non-blocking stdlib socket.

    Only the trio thread touches it; every method that writes is synchronous, so frames from
    different sources can never interleave mid-frame.
    """

    def __init__(self, sock: socket.socket, limits: FanoutLimits) -> None:
        self.sock = sock
        self.limits = limits
        self.log: FrameLog | None = None
        self.cursor = 0
        self._out: memoryview | None = None  # the unsent rest of the item being written
        self._private: deque[bytes | memoryview] = deque()  # memoryview: shared, not counted
        self._private_bytes = 0
        self._welcoming = False  # a welcome is being written: shared frames may pile up meanwhile
        self.pending_close: list[memoryview] = []  # what still has to go out before the socket closes
        self._wake = trio.Event()
        self.closed = False
        self.close_code: int | None = None
        self.on_close: Callable[[Peer], None] | None = None
        self.cancel_scope = trio.CancelScope()

    # -- state ---------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing unsent: the next write can go straight to the socket."""
        return self._out is None and not self._private

    def attach(self, log: FrameLog, cursor: int) -> None:
        """Follow `log` from frame `cursor` on."""
        self.log = log
        self.cursor = cursor

    # -- writing -------------------------------------------------------------------------

    def _try_send(self, data: memoryview) -> int:
        try:
            return self.sock.send(data)
        except _WOULD_BLOCK:
            return 0
        except OSError:
            self.close(None, "")
            return -1

    def offer(self, number: int, frame: bytes) -> int:
        """A new shared frame `number` exists: write it now if this peer is caught up.

        Returns 1 when the frame went (at least partly) straight to the socket, else 0. This
        runs once per connection per frame: keep it lean.
        """
        if self._out is None and not self._private and self.cursor == number and not self.closed:
            self.cursor = number + 1
            try:
                sent = self.sock.send(frame)
            except _WOULD_BLOCK:
                sent = 0
            except OSError:
                self.close(None, "")
                return 0
            if sent < len(frame):
                self._out = memoryview(frame)[sent:]
                self._wake.set()
            return 1
        if not self.closed:
            if not self._welcoming:
                self._check_lag()
            self._wake.set()
        return 0

    def send_private(self, *chunks: bytes | memoryview) -> None:
        """Queue bytes for this peer alone (welcome, ack, reject, pong), in order, atomically.
        A memoryview chunk is shared with others and not counted against `max_private_bytes`."""
        if self.closed:
            return
        size = sum(len(c) for c in chunks if not isinstance(c, memoryview))
        if (
            len(self._private) + len(chunks) > self.limits.max_private_items + 8
            or self._private_bytes + size > self.limits.max_private_bytes
        ):
            metrics.QUEUE_DROPS.labels("private").inc()
            self.close(4408, "too many unsent messages")
            return
        self._private.extend(chunks)
        self._private_bytes += size
        if self._out is None:
            self._pump_nowait()
        if not self.idle:
            self._wake.set()

    def send_welcome(self, head: bytes, shared: bytes, tail: bytes) -> None:
        """Queue a welcome whose large middle (`shared`, the room's encoded DOC) is written from
        the room's own bytes: it does not count against `max_private_bytes`, and shared frames
        may queue behind it (up to the frame log's retention) while it is written."""
        if self.closed:
            return
        self._welcoming = True
        self.send_private(head, memoryview(shared), tail)

    def _next_item(self) -> bool:
        """Load the next thing to write into `_out`; False when there is nothing left."""
        if self._private:
            item = self._private.popleft()
            if isinstance(item, memoryview):
                self._out = item
            else:
                self._private_bytes -= len(item)
                self._out = memoryview(item)
            return True
        self._welcoming = False
        if self.log is not None and self.cursor < self.log.head:
            frame = self.log.get(self.cursor)
            if frame is None:
                self.close(4408, "too far behind; reconnect with since")
                return False
            self.cursor += 1
            metrics.FRAMES_SENT.inc()
            self._out = memoryview(frame)
            return True
        return False

    def _pump_nowait(self) -> bool:
        """Write as much as the socket takes without waiting; True when everything went out."""
        while not self.closed:
            if self._out is None and not self._next_item():
                return not self.closed
            assert self._out is not None
            sent = self._try_send(self._out)
            if sent < 0:
                return False
            if sent < len(self._out):
                self._out = self._out[sent:]
                return False
            self._out = None
        return False

    def _check_lag(self) -> None:
        if self.log is None or self.closed:
            return
        lag = self.log.head - self.cursor
        if lag > self.limits.max_lag_frames or (
            lag > 1 and self.log.bytes_after(self.cursor) > self.limits.max_lag_bytes
        ):
            self.close(4408, "too slow to keep up; reconnect with since")

    async def writer(self) -> None:
        """The peer's writer task: sleeps until the socket is full, then drains with a deadline."""
        while not self.closed:
            await self._wake.wait()
            self._wake = trio.Event()
            while not self.closed and not self._pump_nowait():
                if self.closed:
                    break
                with trio.move_on_after(self.limits.write_timeout) as scope:
                    await trio.lowlevel.wait_writable(self.sock)
                if scope.cancelled_caught:
                    self.close(4408, "write timed out; reconnect with since")
        raise PeerClosed

    # -- closing -------------------------------------------------------------------------

    def close(self, code: int | None, reason: str) -> None:
        """Close now: the close frame goes out as far as the socket takes it without waiting
        (the rest waits in `pending_close` for the connection's linger); cancel the peer's tasks."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if code == 4408:
            metrics.SLOW_CONSUMER_CUTS.inc()
        if code is not None:
            # A close frame may not cut into a half-written frame: finish that one first, then
            # what was queued before the close (the rest of a welcome being written, the
            # `error` that explains the close): every queued item is a whole frame or the
            # continuation of the current one. What the socket does not take now is left in
            # `pending_close` for the linger; queued items are shared or small, never copied.
            queue: list[memoryview] = [self._out] if self._out is not None else []
            queue.extend(item if isinstance(item, memoryview) else memoryview(item) for item in self._private)
            queue.append(memoryview(close_frame(code, reason)))
            while queue:
                try:
                    sent = self.sock.send(queue[0])
                except _WOULD_BLOCK:
                    break
                except OSError:
                    queue.clear()  # the peer is gone either way
                    break
                if sent < len(queue[0]):
                    queue[0] = queue[0][sent:]
                    break
                queue.pop(0)
            self.pending_close = queue
        self._private.clear()
        self._out = None
        self._wake.set()
        if self.on_close is not None:
            self.on_close(self)
        self.cancel_scope.cancel()
