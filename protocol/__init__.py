"""Agora's WebSocket protocol, sans-I/O: bytes in, typed messages out, and back.

No sockets, no trio, nothing of ours imported: every function is pure and testable with bytes.

- `decode_client` turns one client message into an `OpMessage`, `PresenceMessage`,
  `ExecuteMessage`, `InterruptMessage`, `InputReplyMessage` or `PingMessage`, or raises `ProtocolError` (whose
  ``close_code`` says close, or ``None`` with ``seq`` says reject the op).
- `encode` turns a server message (`Welcome`, `Ops`, `Ack`, `Reject`, `Presence`, `Kernel`,
  `InputRequest`, `Pong`, `Error`) into JSON bytes; `encode_op_entry`, `ops_frame_payload` and the
  ``welcome_payload_*`` helpers build broadcast payloads from bytes encoded once.
- `text_frame` and `close_frame` wrap payloads into server WebSocket frames.
- `validate_op` and `validate_cursor` check and normalise ops and cursors from other sources
  (the HTTP API, kernels with ``allow_server=True``).
- `Limits` holds every size bound; `DEFAULT_LIMITS` the contract's defaults.
"""

from protocol.codec import (
    decode_client,
    encode,
    encode_client,
    encode_op_entry,
    ops_frame_payload,
    welcome_head,
    welcome_payload_with_doc,
    welcome_payload_with_ops,
)
from protocol.components import (
    CELL_TYPES,
    EXEC_STATES,
    SERVER_COMPONENTS,
    STREAM_NAMES,
    USER_COMPONENTS,
    Component,
    Op,
    TextItem,
    has_lone_surrogate,
    validate_cursor,
    validate_op,
)
from protocol.errors import (
    CLOSE_FORBIDDEN,
    CLOSE_GONE,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_LARGE,
    CLOSE_TOO_SLOW,
    CLOSE_UNAUTHORIZED,
    ERROR_CODES,
    ProtocolError,
)
from protocol.limits import (
    CELL_ID_RE,
    CLIENT_ID_RE,
    DEFAULT_LIMITS,
    MAX_SAFE_INT,
    NOTEBOOK_ID_RE,
    POS_RE,
    Limits,
)
from protocol.messages import (
    Ack,
    ClientMessage,
    Error,
    ExecuteMessage,
    InputReplyMessage,
    InputRequest,
    InterruptMessage,
    Kernel,
    OpMessage,
    Ops,
    PingMessage,
    Pong,
    Presence,
    PresenceMessage,
    Reject,
    ServerMessage,
    Welcome,
)
from protocol.wsframe import MAX_CLOSE_REASON_BYTES, close_frame, text_frame

__all__ = [
    "CELL_ID_RE",
    "CELL_TYPES",
    "CLIENT_ID_RE",
    "CLOSE_FORBIDDEN",
    "CLOSE_GONE",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_LARGE",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHORIZED",
    "DEFAULT_LIMITS",
    "ERROR_CODES",
    "EXEC_STATES",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_SAFE_INT",
    "NOTEBOOK_ID_RE",
    "POS_RE",
    "SERVER_COMPONENTS",
    "STREAM_NAMES",
    "USER_COMPONENTS",
    "Ack",
    "ClientMessage",
    "Component",
    "Error",
    "ExecuteMessage",
    "InputReplyMessage",
    "InputRequest",
    "InterruptMessage",
    "Kernel",
    "Limits",
    "Op",
    "OpMessage",
    "Ops",
    "PingMessage",
    "Pong",
    "Presence",
    "PresenceMessage",
    "ProtocolError",
    "Reject",
    "ServerMessage",
    "TextItem",
    "Welcome",
    "close_frame",
    "decode_client",
    "encode",
    "encode_client",
    "encode_op_entry",
    "has_lone_surrogate",
    "ops_frame_payload",
    "text_frame",
    "validate_cursor",
    "validate_op",
    "welcome_head",
    "welcome_payload_with_doc",
    "welcome_payload_with_ops",
]
