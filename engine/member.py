"""A connection attached to a room, and the names of the close codes rooms use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.fanout import Peer
from protocol import Error, ServerMessage, encode, wsframe


@dataclass(eq=False, slots=True)
class Member:
    """A connection attached to the room."""

    peer: Peer
    role: str  # "viewer" | "editor"
    client: str  # the room may replace a requested id that another user holds (see Room.join)
    user: dict[str, Any]
    issued: int = 0  # epoch ms its token was minted: a kick of the user at or after it refuses it
    holds_client: bool = False  # counted in the room's client holders (set and cleared by the room)
    # Frames sent right after the welcome, computed then (e.g. the current `kernel` frame).
    greeting: Callable[[], bytes] | None = None


CLOSE_NAMES = {
    1001: "going_away",
    1011: "storage_failed",
    1012: "service_restart",
    4400: "protocol_violation",
    4401: "bad_token",
    4403: "forbidden",
    4404: "notebook_gone",
    4408: "too_slow",
    4413: "message_too_large",
}


def close_name(code: int) -> str:
    """The `error` frame code sent before closing with `code`."""
    return CLOSE_NAMES.get(code, "closing")


def message_frame(message: ServerMessage) -> bytes:
    """`message` encoded as one complete WebSocket text frame."""
    return wsframe.text_frame(encode(message))


def close_member(member: Member, code: int, reason: str) -> None:
    """Send the `error` frame that explains `code`, then close the member's connection."""
    member.peer.send_private(message_frame(Error(close_name(code), reason)))
    member.peer.close(code, reason)
