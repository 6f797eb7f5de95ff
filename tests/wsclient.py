"""A small, real sync client for tests: trio-websocket plus `engine.ot.client.ClientDoc`.

`SyncClient` keeps a local copy of the document exactly like a browser would (one op in flight,
pending ops transformed against incoming ones, its own op coming back is the ack).
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from engine.ot.client import ClientDoc
from engine.ot.model import Notebook, notebook_from_doc


class SyncClient:
    """One WebSocket connection with a local replica. Use `async with SyncClient.connect(...)`."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.doc = ClientDoc(Notebook(), 0, "")
        self.received: list[dict[str, Any]] = []  # every non-ops message, in order
        self.raw_frames: list[str] = []

    # The replica's state, as tests read it.
    notebook = property(lambda self: self.doc.notebook)
    version = property(lambda self: self.doc.version)
    client = property(lambda self: self.doc.client)
    seq = property(lambda self: self.doc.seq)
    inflight = property(lambda self: self.doc.inflight)
    pending = property(lambda self: self.doc.pending)

    @classmethod
    def connect(cls, url: str) -> _Connect:
        return _Connect(url)

    async def recv(self, timeout: float = 10.0, *, presence: bool = False) -> dict[str, Any]:
        """The next message; presence frames (which come on their own clock) are skipped
        unless `presence` is True."""
        with trio.fail_after(timeout):
            while True:
                text = await self.ws.get_message()
                assert isinstance(text, str), "the server sends text frames only"
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
        notebook = notebook_from_doc(welcome["notebook"]) if "notebook" in welcome else Notebook()
        self.doc = ClientDoc(notebook, welcome["version"], welcome["client"])
        return welcome

    async def _send_op(self, outgoing: tuple[int, int, list[dict[str, Any]]] | None) -> None:
        if outgoing is not None:
            seq, base, op = outgoing
            with trio.CancelScope(shield=True):  # a cancelled caller must not lose a marked-inflight op
                await self.send({"type": "op", "seq": seq, "base": base, "op": op})

    async def submit(self, op: list[dict[str, Any]]) -> int:
        """Apply `op` locally and send it (or queue it while another op is in flight)."""
        await self._send_op(self.doc.edit(op))
        return self.doc.seq

    async def pump(self, timeout: float = 10.0) -> dict[str, Any]:
        """Receive one message; apply ops frames to the replica; returns the message."""
        message = await self.recv(timeout, presence=True)
        if message["type"] == "ops":
            for entry in message["ops"]:
                self.doc.receive(entry)
            await self._send_op(self.doc.next_to_send())
        else:
            self.received.append(message)
        return message

    async def sync_until(self, version: int, timeout: float = 10.0) -> None:
        """Pump until the replica reached `version` with nothing of its own outstanding."""
        with trio.fail_after(timeout):
            while self.doc.version < version or not self.doc.settled:
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
