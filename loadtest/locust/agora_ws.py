"""A small locust `User` speaking Agora's sync WebSocket, on websocket-client (gevent-patched).

Each user holds one connection: it times the welcome, then a receive greenlet reads every frame
(`skip_utf8_validation=True`: the server's frames are valid UTF-8 and checking them costs the
load generator more than the parsing), keeps the version (gaps counted), and hands the decoded
message to the scenario. A connection the server closes is resumed with `since` and the same
client id, as a browser would; every unexpected close is a locust failure.

Custom metrics are locust requests of type `WS`; what cannot be a request (versions seen, for the
delivery ratio; whether the server refused kernels) goes to one JSON file per process in the
directory the runner names, written when the test stops.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import agora_batch
import gevent
import locust.runners
import orjson
import websocket
from agora_proto import OP_CLOSE, OP_PING, OP_TEXT, FrameReader, SyncState, now_us
from locust import User, events

CONFIG: dict[str, Any] = json.loads(Path(os.environ["AGORA_LOCUST_CONFIG"]).read_text())
RECONNECTS = 6  # resume attempts after a close (backoff 0.25 s doubling to 4 s: ~12 s in all)


_warm_pid = 0


def warm_resolver() -> None:
    """Resolve the server's name once per process, outside any timing: gevent's resolver starts
    its thread pool on the first lookup (tens of ms), and forked workers start cold again."""
    global _warm_pid
    if _warm_pid == os.getpid():
        return
    _warm_pid = os.getpid()
    u = urlsplit(CONFIG["ws_base"])
    try:
        socket.getaddrinfo(u.hostname, u.port or (443 if u.scheme == "wss" else 80), 0, socket.SOCK_STREAM)
    except OSError:
        pass


# A load process starved of CPU (a busy or shared load generator) can miss locust's 3 one-second
# heartbeats; the master then drops it and hands all its users to the others, which skews the
# run (seen here: 530 users in one of two processes). Allow 30 s. (A module constant of locust,
# which is pinned: requirements.txt.)
locust.runners.HEARTBEAT_LIVENESS = 30

_connections: list[AgoraConnection] = []
_flags: dict[str, Any] = {}
_lock = threading.Lock()


def set_flag(name: str, value: Any) -> None:
    """Report a fact to the runner (e.g. `kernels_unavailable`) through this process's file."""
    _flags[name] = value


def fire(name: str, ms: float, length: int = 0, exception: BaseException | None = None) -> None:
    """Record one custom metric sample (request type `WS`); successes are batched (agora_batch)."""
    if exception is None:
        agora_batch.record(name, ms, length)
        return
    events.request.fire(  # type: ignore[no-untyped-call]
        request_type="WS",
        name=name,
        response_time=ms,
        response_length=length,
        exception=exception,
        context={},
    )


class AgoraConnection:
    """One sync connection and what it saw."""

    def __init__(self, role: str, token: str) -> None:
        self.role = role
        self.token = token
        self.sync = SyncState()
        self.ws: websocket.WebSocket | None = None
        self.closed_by_us = False
        self.lost = False
        self.close_codes: list[int] = []
        self.welcome_payload = b""  # the last resume welcome (its ops carry edit markers)
        with _lock:
            _connections.append(self)

    def url(self, resume: bool) -> str:
        """The sync URL for this token; with `resume`, `since` and the client id too."""
        query: dict[str, str] = {"token": self.token}
        if resume:
            query.update(since=str(self.sync.version), client=self.sync.client)
        return f"{CONFIG['ws_base']}/api/v1/notebooks/{CONFIG['notebook']}/ws?{urlencode(query)}"

    def connect(self, resume: bool = False) -> dict[str, Any] | None:
        """Open the socket and read the welcome; fires `welcome` (or `resume`). None on failure."""
        name = "resume" if resume else "welcome"
        warm_resolver()
        t0 = time.perf_counter()
        try:
            ws = websocket.create_connection(
                self.url(resume), timeout=60, skip_utf8_validation=True, enable_multithread=False
            )
            opcode, payload = ws.recv_data(control_frame=False)
            if opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                raise ConnectionError(f"closed with {code} before the welcome: {payload[2:200]!r}")
            message: dict[str, Any] = orjson.loads(payload)
            if message.get("type") != "welcome":
                raise ConnectionError(f"first message is not a welcome: {payload[:200]!r}")
        except Exception as exc:
            fire(name, (time.perf_counter() - t0) * 1000, 0, exc)
            return None
        fire(name, (time.perf_counter() - t0) * 1000, len(payload))
        ws.settimeout(None)
        self.ws = ws
        self.sync.welcome(message)
        self.welcome_payload = payload if "ops" in message else b""
        return message

    def send(self, data: bytes) -> bool:
        """Send one text frame; False when the socket is gone."""
        if self.ws is None:
            return False
        try:
            self.ws.send(data, websocket.ABNF.OPCODE_TEXT)
            return True
        except Exception:
            return False

    def frames(self) -> Any:
        """Yield `(receive time in µs, raw payload, decoded message)` until closed for good.
        Resumes (with `since`) after a close the client did not ask for."""
        attempts = 0
        while not self.closed_by_us:
            ws = self.ws
            if ws is None:
                return
            read = self._raw_frames if CONFIG.get("reader", "raw") == "raw" else self._library_frames
            code = 1006
            for t, opcode, payload in read(ws):
                if opcode == OP_TEXT:
                    yield t, payload, orjson.loads(payload)
                elif opcode == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    break
            if self.closed_by_us:
                return
            self.close_codes.append(code)
            fire("closed", 0, 0, ConnectionError(f"server closed the socket with {code}"))
            self.ws = None
            try:
                ws.close(timeout=1)
            except Exception:
                pass
            message = None
            while message is None and attempts < RECONNECTS and not self.closed_by_us:
                attempts += 1
                gevent.sleep(min(4.0, 0.25 * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2))
                message = self.connect(resume=True)
            if message is None:
                self.lost = not self.closed_by_us
                return
            yield now_us(), self.welcome_payload, message

    @staticmethod
    def _library_frames(ws: websocket.WebSocket) -> Any:
        """websocket-client's own frame parser (about 25 µs a frame in Python)."""
        while True:
            try:
                opcode, payload = ws.recv_data(control_frame=False)
            except Exception:
                return
            yield now_us(), opcode, payload
            if opcode == OP_CLOSE:
                return

    @staticmethod
    def _raw_frames(ws: websocket.WebSocket) -> Any:
        """The same socket read in 256 KiB chunks and split by `FrameReader` (about 2.5 µs a
        frame). websocket-client reads exactly what each frame needs, so after the welcome
        nothing of the stream sits in its buffers. Frames of one chunk share its receive time."""
        reader = FrameReader()
        sock = ws.sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(262144)
            except Exception:
                return
            if not data:
                return
            t = now_us()
            for opcode, payload in reader.feed(data):
                if opcode == OP_PING:
                    try:
                        ws.pong(payload)
                    except Exception:
                        return
                    continue
                yield t, opcode, payload
                if opcode == OP_CLOSE:
                    return

    def close(self) -> None:
        """Close from our side (the end of the test)."""
        self.closed_by_us = True
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:
                pass

    def summary(self) -> dict[str, Any]:
        """What the runner needs for the delivery ratio."""
        s = self.sync
        return {
            "role": self.role,
            "welcomed": s.welcomed,
            "welcome_version": s.welcome_version,
            "version": s.version,
            "entries": s.entries,
            "gaps": s.gaps,
            "lost": self.lost,
            "close_codes": self.close_codes,
        }


class AgoraWsUser(User):
    """Base user: one connection per user, a receive greenlet, `handle` for each message."""

    abstract = True
    role = "viewer"

    def token(self) -> str:
        """One of the runner's tokens for this role."""
        tokens: list[str] = CONFIG[f"{self.role}_tokens"]
        return tokens[random.randrange(len(tokens))]

    def on_start(self) -> None:
        """Connect (timing the welcome) and start the receive greenlet."""
        self.conn = AgoraConnection(self.role, self.token())
        self.receiver: gevent.Greenlet | None = None
        if self.conn.connect() is None:
            return
        self.receiver = gevent.spawn(self.receive_loop)

    def receive_loop(self) -> None:
        """Take versions from every frame and pass every message to `handle`."""
        for t, payload, message in self.conn.frames():
            kind = message.get("type")
            if kind == "ops":
                self.conn.sync.take_entries(message["ops"])
            elif kind == "welcome":
                pass  # a resume: connect() already took it
            elif kind == "error" and message.get("code") != "kernels_unavailable":
                fire("error frame", 0, 0, ConnectionError(f"{message.get('code')}: {message.get('message')}"))
            self.handle(t, payload, message)

    def handle(self, t_us: int, payload: bytes, message: dict[str, Any]) -> None:
        """Scenario hook: one server message (the version is already taken)."""

    def on_stop(self) -> None:
        """Close the socket from our side and stop receiving."""
        self.conn.close()
        if self.receiver is not None:
            self.receiver.kill(block=False)


def seconds_until(t: float) -> float:
    """Seconds from now until epoch time `t` (0 if past)."""
    return max(0.0, t - time.time())


def _write_summary(**_: Any) -> None:
    """This process's connections and flags, for the runner (atomically replaced)."""
    with _lock:
        conns = [c.summary() for c in _connections]
    if not conns and not _flags:
        return
    out = Path(CONFIG["out_dir"]) / f"proc-{os.getpid()}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"connections": conns, "flags": _flags}))
    tmp.replace(out)


def _summary_writer() -> None:
    # Written every second, not only at the stop: a loaded forked worker may be gone before its
    # stop handlers run. Nothing is committed after t_end, so the last write is the final state.
    while True:
        gevent.sleep(1.0)
        _write_summary()


def _on_test_start(**_: Any) -> None:
    gevent.spawn(_summary_writer)


events.test_start.add_listener(_on_test_start)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(_write_summary)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_write_summary)  # type: ignore[no-untyped-call]
