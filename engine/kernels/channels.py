"""Jupyter messages over ZMQ, driven from the trio thread (no asyncio, no extra threads).

A `Channel` wraps one socket. pyzmq's `FD` is edge-triggered and any zmq call on the socket
may consume the edge, so exactly one task receives per socket (`receive_loop`), it re-checks
`zmq.EVENTS` before every wait, and `send` wakes that task after each send (pyzmq's own
`zmq/_future.py` does the same). Messages are taken in bounded batches with a checkpoint in
between, so a flood of kernel output never stalls the trio loop for long.

`Codec` signs outgoing messages with jupyter_client's `Session` and decodes incoming ones with
orjson after checking the signature (`Session.sign`), which is several times cheaper than
`Session.deserialize` (no date parsing) on a flood of stream messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio
import zmq
from jupyter_client.session import Session

DELIM = b"<IDS|MSG>"
BATCH = 64  # messages decoded between two checkpoints (a batch costs at most a few ms)


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded Jupyter message (metadata and buffers are not needed here)."""

    msg_type: str
    parent_id: str | None
    content: dict[str, Any]
    header: dict[str, Any]


class BadMessage(Exception):
    """A message with a bad signature or shape; it is dropped."""


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates (Python's json writes them as escapes): replace them.
        try:
            return _clean(json.loads(raw))
        except ValueError:
            raise BadMessage("content is not JSON") from None


class Codec:
    """Signs and checks Jupyter wire messages with one kernel's key."""

    def __init__(self, key: bytes, signature_scheme: str = "hmac-sha256") -> None:
        self.session = Session(key=key, signature_scheme=signature_scheme, username="agora")

    def request(
        self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None = None
    ) -> tuple[str, list[bytes]]:
        """A signed request (a reply when `parent` is the header answered): (msg_id, frames)."""
        msg = self.session.msg(msg_type, content, parent=parent)
        frames: list[bytes] = self.session.serialize(msg)
        return str(msg["header"]["msg_id"]), frames

    def decode(self, frames: list[bytes]) -> Message:
        """Check the signature and decode. Raises `BadMessage`."""
        try:
            at = frames.index(DELIM)
        except ValueError:
            raise BadMessage("no delimiter") from None
        if len(frames) < at + 6:
            raise BadMessage("too few frames")
        signature, parts = frames[at + 1], frames[at + 2 : at + 6]
        if self.session.auth is not None and signature != self.session.sign(parts):
            raise BadMessage("bad signature")
        header, parent = orjson.loads(parts[0]), orjson.loads(parts[1])
        content = _loads(parts[3])
        if not isinstance(header, dict) or not isinstance(parent, dict) or not isinstance(content, dict):
            raise BadMessage("not objects")
        parent_id = parent.get("msg_id")
        msg_type = str(header.get("msg_type", ""))
        return Message(msg_type, parent_id if isinstance(parent_id, str) else None, content, header)


class Channel:
    """One ZMQ socket used from trio: non-blocking sends, one receiving task."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.fd = int(sock.getsockopt(zmq.FD))
        self._wait: trio.CancelScope | None = None
        self.closed = False

    def send(self, frames: list[bytes]) -> None:
        """Queue a message (never blocks); then wake the receiver, whose edge it may have eaten."""
        self.sock.send_multipart(frames, zmq.NOBLOCK)
        if self._wait is not None:
            self._wait.cancel()

    async def receive_loop(self, handle: Callable[[list[bytes]], None]) -> None:
        """Call `handle(frames)` for every message until cancelled, `BATCH` per checkpoint."""
        sock = self.sock
        while True:
            taken = 0
            while taken < BATCH:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                handle(frames)
                taken += 1
            if taken == BATCH:
                await trio.lowlevel.checkpoint()
                continue
            if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                await trio.lowlevel.checkpoint()
                continue
            # Safety net: wake once a second even if an edge was lost to a concurrent zmq call.
            with trio.CancelScope(deadline=trio.current_time() + 1.0) as self._wait:
                await trio.lowlevel.wait_readable(self.fd)
            self._wait = None

    def close(self) -> None:
        """Close the socket (drop unsent messages); the receiving task must be cancelled first."""
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.fd)
            self.sock.close(linger=0)
