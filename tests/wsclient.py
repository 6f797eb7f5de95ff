"""A small, real sync client for tests: trio-websocket plus the client half of the OT protocol.

`SyncClient` keeps a local copy of the document exactly like a browser would: it applies
`ops` frames in order, treats its own op coming back as the ack, and transforms incoming ops
against its in-flight and pending ops (op_first=True) and those against the incoming ones.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from engine.ot.components import apply_op, transform_op
from engine.ot.model import Notebook, notebook_from_doc

_ids = itertools.count(1)


class SyncClient:
    """One WebSocket connection with a local replica. Use `async with SyncClient.connect(...)`."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.notebook: Notebook | None = None
        self.version = 0
        self.client = ""
        self.seq = 0
        self.inflight: tuple[int, list[dict[str, Any]]] | None = None
        self.pending: list[tuple[int, list[dict[str, Any]]]] = []
        self.received: list[dict[str, Any]] = []  # every non-ops message, in order
        self.raw_frames: list[str] = []

    @classmethod
    def connect(cls, url: str) -> _Connect:
        return _Connect(url)

    async def recv(self, timeout: float = 10.0, *, presence: bool = False) -> dict[str, Any]:
        """The next message; presence frames (which come on their own clock) are skipped
        unless `presence` is True."""
        with trio.fail_after(timeout):
            while True:
                text = await self.ws.get_message()
                self.raw_frames.append(text)
                message: dict[str, Any] = orjson.loads(text)
                if presence or message["type"] != "presence":
                    return message

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send a message (dicts are JSON-encoded; strings/bytes go as they are)."""
        if isinstance(message, dict):
            await self.ws.send_message(orjson.dumps(message).decode())
        else:
            await self.ws.send_message(message)

    async def start(self) -> dict[str, Any]:
        """Read the welcome and initialise the replica from it."""
        welcome = await self.recv()
        assert welcome["type"] == "welcome", welcome
        self.welcome = welcome
        self.client = welcome["client"]
        self.version = welcome["version"]
        if "notebook" in welcome:
            self.notebook = notebook_from_doc(welcome["notebook"])
        return welcome

    # -- editing -----------------------------------------------------------------------------

    async def submit(self, op: list[dict[str, Any]]) -> int:
        """Apply `op` locally and send it (or queue it while another op is in flight)."""
        assert self.notebook is not None
        self.notebook = apply_op(self.notebook, op, self.version + 1)
        self.seq += 1
        if self.inflight is None:
            self.inflight = (self.seq, op)
            with trio.CancelScope(shield=True):
                    await self.send({"type": "op", "seq": self.seq, "base": self.version, "op": op})
        else:
            self.pending.append((self.seq, op))
        return self.seq

    async def _send_next(self) -> None:
        if self.inflight is None and self.pending:
            self.inflight = self.pending.pop(0)
            seq, op = self.inflight
            await self.send({"type": "op", "seq": seq, "base": self.version, "op": op})

    def _incoming(self, entry: dict[str, Any]) -> None:
        assert entry["v"] == self.version + 1, (entry["v"], self.version)
        self.version = entry["v"]
        if entry["client"] == self.client and self.inflight is not None and entry["seq"] == self.inflight[0]:
            self.inflight = None
            return
        op = entry["op"]
        mine = ([self.inflight] if self.inflight else []) + self.pending
        new_mine = []
        for seq, pending_op in mine:
            op_next = transform_op(op, pending_op, op_first=True)
            pending_op = transform_op(pending_op, op, op_first=False)
            op = op_next
            new_mine.append((seq, pending_op))
        if self.inflight:
            self.inflight, self.pending = new_mine[0], new_mine[1:]
        else:
            self.pending = new_mine
        assert self.notebook is not None
        self.notebook = apply_op(self.notebook, op, self.version)

    async def pump(self, timeout: float = 10.0) -> dict[str, Any]:
        """Receive one message; apply ops frames to the replica; returns the message."""
        message = await self.recv(timeout, presence=True)
        if message["type"] == "ops":
            for entry in message["ops"]:
                self._incoming(entry)
            with trio.CancelScope(shield=True):  # a cancelled pump must not lose a marked-inflight op
                await self._send_next()
        else:
            self.received.append(message)
        return message

    async def sync_until(self, version: int, timeout: float = 10.0) -> None:
        """Pump until the replica reached `version` with nothing of its own outstanding."""
        with trio.fail_after(timeout):
            while self.version < version or self.inflight is not None or self.pending:
                await self.pump(timeout)

    async def until(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """Pump until a message of type `kind` arrives; returns it."""
        with trio.fail_after(timeout):
            while True:
                message = await self.pump(timeout)
                if message["type"] == kind:
                    return message


class _Connect:
    def __init__(self, url: str) -> None:
        self.url = url
        self._cm: Any = None

    async def __aenter__(self) -> SyncClient:
        self._cm = open_websocket_url(self.url, message_queue_size=100000, max_message_size=64 * 1024 * 1024)
        ws = await self._cm.__aenter__()
        return SyncClient(ws)

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._cm.__aexit__(*exc)
        except ConnectionClosed:
            pass


async def close_reason(client: SyncClient, timeout: float = 10.0) -> int | None:
    """Read until the server closes; returns the close code."""
    with trio.fail_after(timeout):
        try:
            while True:
                await client.ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.code if exc.reason else None
