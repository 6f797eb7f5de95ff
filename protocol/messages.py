"""The typed messages of the WebSocket protocol (contract §4), as frozen slotted dataclasses.

Client → server messages are what `decode_client` returns; server → client messages are what
`encode` turns into bytes. Field names are the wire names; the wire ``type`` of each class is
its ``TYPE`` class variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.errors import ProtocolError

__all__ = [
    "Ack",
    "ClientMessage",
    "Error",
    "ExecuteMessage",
    "InputReplyMessage",
    "InputRequest",
    "InterruptMessage",
    "Kernel",
    "OpMessage",
    "PingMessage",
    "Pong",
    "Presence",
    "PresenceMessage",
    "Reject",
    "ServerMessage",
    "Welcome",
]


# Client → server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpMessage:
    """``{"type":"op","seq":S,"base":V,"op":[…]}``: `op` is validated and normalised."""

    TYPE: ClassVar[str] = "op"
    seq: int
    base: int
    op: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PresenceMessage:
    """``{"type":"presence","cursor":{"cell","anchor","head"}|null}``."""

    TYPE: ClassVar[str] = "presence"
    cursor: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ExecuteMessage:
    """``{"type":"execute","cells":[ids]}``: cell ids in the order they are to run."""

    TYPE: ClassVar[str] = "execute"
    cells: list[str]


@dataclass(frozen=True, slots=True)
class InterruptMessage:
    """``{"type":"interrupt"}``."""

    TYPE: ClassVar[str] = "interrupt"


@dataclass(frozen=True, slots=True)
class InputReplyMessage:
    """``{"type":"input_reply","value":str}``: the answer to this connection's `InputRequest`."""

    TYPE: ClassVar[str] = "input_reply"
    value: str


@dataclass(frozen=True, slots=True)
class PingMessage:
    """``{"type":"ping"}``; answered with `Pong`."""

    TYPE: ClassVar[str] = "ping"


ClientMessage = (
    OpMessage | PresenceMessage | ExecuteMessage | InterruptMessage | InputReplyMessage | PingMessage
)


# Server → client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """The first frame: a full snapshot (`notebook`) or a resume (`ops` after ``since``).

    Exactly one of `notebook` and `ops` is given (ValueError otherwise).
    """

    TYPE: ClassVar[str] = "welcome"
    client: str
    role: str
    user: dict[str, Any]
    version: int
    notebook: dict[str, Any] | None = None
    ops: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if (self.notebook is None) == (self.ops is None):
            raise ValueError("Welcome needs exactly one of notebook and ops")


@dataclass(frozen=True, slots=True)
class Ops:
    """Committed ops ``[{"v","client","seq","user","op"}, …]`` in version order."""

    TYPE: ClassVar[str] = "ops"
    ops: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a resubmitted op that was already committed at version `v`."""

    TYPE: ClassVar[str] = "ack"
    seq: int
    v: int


@dataclass(frozen=True, slots=True)
class Reject:
    """An invalid op: encoded as ``{"type":"reject","seq":S,"error":{"code","message"}}``."""

    TYPE: ClassVar[str] = "reject"
    seq: int
    code: str
    message: str

    @classmethod
    def from_error(cls, error: ProtocolError) -> Reject:
        """The reject answering `error`; ValueError if the error carries no ``seq``."""
        if error.seq is None:
            raise ValueError("only a ProtocolError with a seq can be answered with a reject")
        return cls(error.seq, error.code, error.message)


@dataclass(frozen=True, slots=True)
class Presence:
    """Who is here: a viewer count and the editors ``[{"client","user","cursor","v"}]``."""

    TYPE: ClassVar[str] = "presence"
    viewers: int
    editors: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Kernel:
    """The kernel state, its name, the queue of cell ids waiting to run and the running cell."""

    TYPE: ClassVar[str] = "kernel"
    state: str
    queue: list[str]
    name: str | None = None
    running: str | None = None


@dataclass(frozen=True, slots=True)
class InputRequest:
    """``{"type":"input_request","cell","prompt","password"}``: sent only to the requester."""

    TYPE: ClassVar[str] = "input_request"
    cell: str
    prompt: str
    password: bool


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a ping."""

    TYPE: ClassVar[str] = "pong"


@dataclass(frozen=True, slots=True)
class Error:
    """``{"type":"error","code","message"}``, sent just before closing the connection."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    @classmethod
    def from_error(cls, error: ProtocolError) -> Error:
        """The error frame announcing that `error` closes the connection."""
        return cls(error.code, error.message)


ServerMessage = Welcome | Ops | Ack | Reject | Presence | Kernel | InputRequest | Pong | Error
