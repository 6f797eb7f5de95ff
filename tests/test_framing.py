"""Request smuggling (RFC 9112 §6): ambiguous framing is refused with 400 and a close."""

from __future__ import annotations

import httpx
import orjson
import pytest
import trio

from engine.framing import framing_error
from tests.server_process import ServerProcess


def head(*fields: str, line: str = "POST /api/v1/notebooks HTTP/1.1") -> bytes:
    return ("\r\n".join([line, "Host: x", *fields]) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    "fields",
    [
        ("Content-Length: 5", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "content-length: 0"),
        ("Content-Length: 5", "Content-Length: 6"),
        ("Content-Length: 5, 6",),
        ("Content-Length: -1",),
        ("Content-Length: 0x5",),
        ("Transfer-Encoding: chunked, gzip",),
        ("Transfer-Encoding: identity",),
        ("Content-Length : 5",),
        ("Transfer-Encoding:\tchunked", " folded"),
        ("Content-Length: 5\nTransfer-Encoding: chunked",),
        ("no colon here",),
    ],
)
def test_ambiguous_heads_are_refused(fields: tuple[str, ...]) -> None:
    assert framing_error(head(*fields)) is not None


def test_chunked_in_http_1_0_is_refused() -> None:
    assert framing_error(head("Transfer-Encoding: chunked", line="POST / HTTP/1.0")) is not None


@pytest.mark.parametrize(
    "fields",
    [
        (),
        ("Content-Length: 5",),
        ("Content-Length: 5", "Content-Length: 5"),
        ("Transfer-Encoding: gzip, chunked",),
        ("transfer-encoding: CHUNKED",),
        ("X-Thing: a: b",),
    ],
)
def test_unambiguous_heads_pass(fields: tuple[str, ...]) -> None:
    assert framing_error(head(*fields)) is None


async def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send `data` on one connection; everything the server answers until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(15):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def create(notebook_id: str, api_key: str, framing: str) -> bytes:
    body = orjson.dumps({"id": notebook_id})
    if framing == "chunked":
        return (
            f"POST /api/v1/notebooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Length: 4\r\n\r\n{len(body):x}\r\n"
        ).encode() + body + b"\r\n0\r\n\r\n"
    return (
        f"POST /api/v1/notebooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{framing}\r\n\r\n"
    ).encode() + body


async def test_smuggled_requests_are_refused(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    key = server.api_key
    smuggled = create("smuggled", key, "X-Pad: 1")
    # CL + TE on the connection's first request: chunked framing would end after the chunk and
    # leave `smuggled` as a second request.
    answer = await exchange(server, create("first", key, "chunked") + smuggled)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    assert b'"bad_framing"' in answer
    # Differing duplicate Content-Length values.
    answer = await exchange(server, create("dup", key, "Content-Length: 3") + smuggled)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    # Behind a good request on the same connection, in one write or after its answer: the gate
    # serves one request per connection, and h11 (which would frame a later one) refuses CL+TE
    # too. Either way, nothing of it is served.
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for late in (create("piped", key, "chunked") + smuggled, None):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        answer = b""
        async with stream:
            await stream.send_all(healthz + (late or b""))
            with trio.move_on_after(5):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
                    if late is None and b'"status":"ok"' in answer:
                        try:
                            await stream.send_all(create("later", key, "chunked") + smuggled)
                        except trio.BrokenResourceError:
                            break
                        late = b""
        assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 201" not in answer, answer
    listed = (await http.get("/api/v1/notebooks")).json()["items"]
    assert listed == [], "nothing of an ambiguous request took effect"
