"""The front gate: what the listener refuses on a request head alone, before reading any body.

Every connection is counted (`--max-connections`); every request head the listener reads is
screened here before a byte of its body is read:

- beyond the connection limit → 503 `too_many_connections` (no upgrade, no body read);
- an `/api/v1` request that needs an API key and has none or a bad one → 401 `unauthorized`;
- a valid key over its request rate (`--http-rate`, `--http-burst`) → 429 `rate_limited` with
  `Retry-After`;
- `Content-Length` over `--http-max-body` → 413 `payload_too_large`.

A refusal is written with `Connection: close`, then the socket is half-closed and whatever the
client still sends is read and dropped for a moment (so the kernel does not reset the connection
under the answer), never buffered. An accepted HTTP request is handed on with `Connection: close`
added to its head, so every request on the port passes this gate (a keep-alive connection could
otherwise carry a second, unscreened request), and over a `GatedStream` that answers 408
`request_timeout` when its body stalls for `--http-body-timeout` seconds.
"""

from __future__ import annotations

import hashlib
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import orjson
import trio

from engine.listener import SYNC_PATH, PrefixedStream, close_socket, drain, send_all

API_PREFIX = "/api/v1"
PUBLIC_API_PATHS = frozenset({f"{API_PREFIX}/openapi.json", f"{API_PREFIX}/docs"})
REFUSAL_DRAIN = 2.0  # seconds a refused connection's input is read and dropped before closing
MAX_RATE_KEYS = 10_000  # buckets kept; beyond, the fullest (idle) ones are forgotten
_REASONS = {
    401: "Unauthorized",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
_CONNECTION_HEADER = re.compile(rb"^connection:[^\r\n]*\r\n", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class GateLimits:
    """The limits screened on request heads (flags in `server.py`, documented in docs/operations.md)."""

    max_connections: int = 10_000
    http_max_body: int = 32 * 1024 * 1024
    http_body_timeout: float = 15.0  # seconds without body progress before 408
    http_rate: float = 100.0  # requests per second per API key, sustained; 0 turns it off
    http_burst: float = 1000.0  # requests a key may make at once


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer given on the head alone: status, JSON error code and message, extra headers."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> bytes:
        """The complete HTTP/1.1 response, closing the connection."""
        body = orjson.dumps({"error": {"code": self.code, "message": self.message}})
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class Head:
    """What the gate needs from a request head."""

    method: str
    path: str  # percent-decoded, repeated slashes collapsed
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    content_length: int | None
    chunked: bool


def parse_head(raw: bytes) -> Head | None:
    """Parse a request head (up to the blank line); None when it is not HTTP/1.x-shaped.

    A head this cannot parse is handed on unchanged: hypercorn answers malformed requests itself.
    """
    text = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    length_text = headers.get("content-length")
    content_length: int | None = None
    if length_text is not None:
        if not length_text.isdigit():
            return None
        content_length = int(length_text)
    target = urlsplit(parts[1]).path if "://" in parts[1] else parts[1].split("?", 1)[0]
    path = re.sub(r"/{2,}", "/", unquote(target))
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    return Head(parts[0].upper(), path, headers, content_length, chunked)


def needs_api_key(path: str) -> bool:
    """Whether the app demands an API key for `path` (contract §2)."""
    under_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
    return under_api and path not in PUBLIC_API_PATHS


def with_connection_close(raw: bytes) -> bytes:
    """`raw` (a head plus whatever followed it) with its Connection headers replaced by `close`."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    request_line, _, fields = head.partition(b"\r\n")
    fields = _CONNECTION_HEADER.sub(b"", fields + b"\r\n") if fields else b""
    return request_line + b"\r\n" + fields + b"Connection: close\r\n\r\n" + rest


class _Bucket:
    """A token bucket over `time.monotonic()`; `take` answers 0 or the seconds until a token."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Gate:
    """Counts connections and screens request heads. Only the trio thread uses it."""

    def __init__(self, limits: GateLimits, verify_key: Callable[[str], bool]) -> None:
        self.limits = limits
        self._verify_key = verify_key
        self.open_connections = 0
        self._buckets: dict[bytes, _Bucket] = {}

    # -- connections ----------------------------------------------------------------------------

    def enter(self) -> bool:
        """Count a new connection; False (and not counted) when the server is full."""
        if self.open_connections >= self.limits.max_connections:
            return False
        self.open_connections += 1
        return True

    def leave(self) -> None:
        """A connection counted by `enter` ended."""
        self.open_connections -= 1

    # -- heads ----------------------------------------------------------------------------------

    def screen(self, raw: bytes, admitted: bool) -> Refusal | None:
        """The refusal for this head, or None to let it through. Reads nothing but the head."""
        if not admitted:
            return Refusal(
                503,
                "too_many_connections",
                f"The server is at its limit of {self.limits.max_connections} connections; retry later.",
                {"Retry-After": "1"},
            )
        head = parse_head(raw)
        if head is None:
            return None
        if needs_api_key(head.path) and not SYNC_PATH.match(raw):  # sync sockets carry a token
            refusal = self._authorise(head)
            if refusal is not None:
                return refusal
        if head.content_length is not None and head.content_length > self.limits.http_max_body:
            return Refusal(
                413,
                "payload_too_large",
                f"The request body is larger than the limit of {self.limits.http_max_body} bytes.",
            )
        return None

    def _authorise(self, head: Head) -> Refusal | None:
        scheme, _, key = head.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return Refusal(
                401,
                "unauthorized",
                "An API key is required: send 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": 'Bearer realm="agora"'},
            )
        if not self._verify_key(key):
            return Refusal(
                401,
                "unauthorized",
                "The API key is not valid (unknown or revoked).",
                {"WWW-Authenticate": 'Bearer realm="agora", error="invalid_token"'},
            )
        wait = self._rate_wait(key)
        if wait > 0:
            return Refusal(
                429,
                "rate_limited",
                f"Too many requests with this API key (limit {self.limits.http_rate:g}/s); "
                f"retry after {math.ceil(wait)} s.",
                {"Retry-After": str(math.ceil(wait))},
            )
        return None

    def _rate_wait(self, key: str) -> float:
        if self.limits.http_rate <= 0:
            return 0.0
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        bucket = self._buckets.get(digest)
        if bucket is None:
            if len(self._buckets) >= MAX_RATE_KEYS:
                self._buckets.clear()  # only valid keys get here: a handful in practice
            bucket = self._buckets[digest] = _Bucket(self.limits.http_rate, self.limits.http_burst)
        return bucket.take()

    # -- answering ------------------------------------------------------------------------------

    async def refuse(self, sock: socket.socket, refusal: Refusal) -> None:
        """Answer `refusal` on `sock` and close it (see `refuse`)."""
        await refuse(sock, refusal)

    def gated_stream(self, stream: trio.SocketStream, raw: bytes) -> GatedStream:
        """The stream hypercorn reads an accepted request from (head rewritten to close after it)."""
        head = parse_head(raw)
        prefix = with_connection_close(raw)
        due: int | None = None  # bytes of head and body still to come; None: chunked, unknown
        if head is not None and not head.chunked:
            due = prefix.index(b"\r\n\r\n") + 4 + (head.content_length or 0)
        return GatedStream(stream, prefix, due, self.limits.http_body_timeout)


async def refuse(sock: socket.socket, refusal: Refusal) -> None:
    """Write `refusal`, half-close, drop what the client still sends for a moment, close."""
    with trio.CancelScope(shield=True), trio.move_on_after(REFUSAL_DRAIN):
        if await send_all(sock, refusal.response()):
            await drain(sock)
    close_socket(sock)


async def drain_and_close(sock: socket.socket) -> None:
    """Half-close, read and drop input until EOF (the caller bounds the time), then close, so
    that what was written last (an answer, a close frame) arrives instead of a reset."""
    await drain(sock)
    close_socket(sock)


class GatedStream(PrefixedStream):
    """An accepted request's stream: answers 408 and ends when the body stalls.

    `due` counts the bytes of the request (head and body) still to be read; None for a chunked
    body, whose end only hypercorn sees: then every read before the response starts is timed.
    """

    def __init__(self, stream: trio.SocketStream, prefix: bytes, due: int | None, timeout: float) -> None:
        super().__init__(stream, prefix)
        self._due = due
        self._timeout = timeout
        self._responding = False  # hypercorn has started writing its response
        self._timed_out = False  # this stream answered 408 itself

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The request's next bytes; b"" (end) after answering 408 when the body stalls.

        Bytes after the one request (a pipelined second request) are read and dropped: the
        head said `Connection: close`, and only screened requests are served.
        """
        while not self._timed_out:
            if self._prefix:
                data, self._prefix = self._prefix, b""
                await trio.lowlevel.checkpoint()
            elif self._responding or (self._due is not None and self._due <= 0):
                data = await self.transport.receive_some(max_bytes)
            else:
                data = b""
                with trio.move_on_after(self._timeout) as stall:
                    data = await self.transport.receive_some(max_bytes)
                if stall.cancelled_caught:
                    await self._answer_timeout()
                    return b""
            if self._due is None or not data:
                return data
            if self._due > 0:
                data = data[: self._due]
                self._due -= len(data)
                return data
        return b""

    async def _answer_timeout(self) -> None:
        self._timed_out = True
        if self._responding:
            return
        message = f"The request body made no progress for {self._timeout:g} s."
        refusal = Refusal(408, "request_timeout", message)
        try:
            await self.transport.send_all(refusal.response())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write for hypercorn (refused once this stream has answered 408 itself)."""
        if self._timed_out:
            raise trio.BrokenResourceError("the request body timed out")
        self._responding = True
        await super().send_all(data)
