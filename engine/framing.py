"""Request framing checks (RFC 9112 §6): refuse a request whose body length is ambiguous.

Request smuggling lives in the gap between two parsers that frame one byte stream differently,
for example a proxy that trusts `Content-Length` and a server that trusts `Transfer-Encoding`.
A request head that could be framed in more than one way is refused with 400 and the connection
is closed, before any parser acts on it: the front listener checks each connection's first head
with `framing_error`; later requests on a kept-alive connection are parsed by h11 inside
hypercorn, which `guard_h11` makes refuse `Content-Length` with `Transfer-Encoding` (h11 itself
refuses the other cases, but lets Transfer-Encoding win over Content-Length).
"""

from __future__ import annotations

from typing import Any

import h11
import h11._connection
import orjson

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def framing_error(head: bytes) -> str | None:
    """Why the request head `head` (request line and headers, CRLF-terminated) must be refused,
    or None when its framing is unambiguous.

    Refused: both `Content-Length` and `Transfer-Encoding`; `Content-Length` values that differ
    or are not plain digits; a `Transfer-Encoding` whose last coding is not `chunked`, or in an
    HTTP/1.0 request; whitespace between a field name and its colon; obsolete line folding; a
    bare CR or LF inside a line; a field line without a colon.
    """
    text = head.split(b"\r\n\r\n", 1)[0]
    lines = text.split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        return "a bare CR or LF inside the request head"
    request_line, fields = lines[0], lines[1:]
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in fields:
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding in the request head"
        name, colon, value = line.partition(b":")
        if not colon or not name or any(c not in _TOKEN_CHARS for c in name):
            return "a malformed header field (no colon, or whitespace before it)"
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.extend(v.strip(b" \t") for v in value.split(b","))
        elif lowered == b"transfer-encoding":
            codings.extend(v.strip(b" \t").lower() for v in value.split(b",") if v.strip(b" \t"))
    if lengths and codings:
        return "both Content-Length and Transfer-Encoding"
    if lengths:
        if not all(v.isdigit() for v in lengths):
            return "a Content-Length that is not a number"
        if len({int(v) for v in lengths}) > 1:
            return "conflicting Content-Length values"
    if codings:
        if request_line.endswith(b"HTTP/1.0"):
            return "Transfer-Encoding in an HTTP/1.0 request"
        if codings[-1] != b"chunked":
            return "a Transfer-Encoding whose last coding is not chunked"
    return None


def bad_request_response(reason: str) -> bytes:
    """A complete `400` response with the JSON error shape, closing the connection."""
    body = orjson.dumps(
        {"error": {"code": "bad_framing", "message": f"The request is ambiguous: {reason}."}}
    )
    return (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


def guard_h11() -> None:
    """Make h11 refuse a request carrying both Content-Length and Transfer-Encoding (hypercorn
    then answers 400 and closes). Idempotent. Wraps h11's private `_body_framing` (h11 is pinned
    to 0.16.x in pyproject; tests/test_framing.py exercises this seam)."""
    original: Any = h11._connection._body_framing
    if getattr(original, "_agora_guarded", False):
        return

    def body_framing(request_method: bytes, event: Any) -> Any:
        if type(event) is h11.Request:
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.LocalProtocolError(
                    "both Content-Length and Transfer-Encoding", error_status_hint=400
                )
        return original(request_method, event)

    body_framing._agora_guarded = True  # type: ignore[attr-defined]
    h11._connection._body_framing = body_framing
