"""Server-side RFC 6455 frame writing for the broadcast fast path.

A server frame is unmasked (RFC 6455 §5.1), so its bytes are the same for every recipient:
build the frame once, write it to N sockets. Incoming frames are parsed by wsproto elsewhere.
"""

from __future__ import annotations

import struct

__all__ = ["MAX_CLOSE_REASON_BYTES", "close_frame", "text_frame", "text_frame_header"]

_FIN = 0x80
_OPCODE_TEXT = 0x1
_OPCODE_CLOSE = 0x8
#: A control frame's payload is at most 125 bytes, two of which are the close code.
MAX_CLOSE_REASON_BYTES = 123
_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((_FIN | opcode, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN | opcode, 126, length)
    return struct.pack("!BBQ", _FIN | opcode, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (opcode 1) carrying `payload`.

    Promises the shortest RFC 6455 length encoding (7, 16 or 64 bits) followed by the payload
    unchanged. The caller guarantees the payload is UTF-8 (as `encode` produces).
    """
    return _header(_OPCODE_TEXT, len(payload)) + payload


def text_frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame whose payload is `length` bytes.

    For payloads sent in pieces (a shared, cached snapshot between a per-connection prefix
    and suffix) without copying them into one buffer.
    """
    return _header(_OPCODE_TEXT, length)


def close_frame(code: int, reason: str = "") -> bytes:
    """One unmasked close frame with `code` and `reason`.

    Promises a frame any RFC 6455 client accepts: the reason is UTF-8, cut at a character
    boundary to fit 123 bytes. Raises ValueError for a code a frame may not carry (outside
    1000-4999, 1004-1006, 1015, or the unassigned 1016-2999).
    """
    if not (1000 <= code <= 1014 or 3000 <= code <= 4999) or code in _RESERVED_CLOSE_CODES:
        raise ValueError(f"{code} is not a close code that may be sent")
    data = reason.encode("utf-8")
    if len(data) > MAX_CLOSE_REASON_BYTES:
        data = data[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    payload = struct.pack("!H", code) + data
    return _header(_OPCODE_CLOSE, len(payload)) + payload
