"""Owner-only routes on several hosts (contract §7): answer 503 `not_owner` for notebooks another
live host has open, before any work is done, so the proxy tries the next host.

Owner-only are `/api/v1/notebooks/{id}` (and everything under it, including the WebSocket) and
`/embed/{id}`. `OwnerGuard` wraps the ASGI app for HTTP; `refuse_sync_if_not_owner` does the same
for a sync WebSocket upgrade before it is accepted. A notebook open on this host always passes
without a database round trip. Every 503 this host answers carries `Retry-After: 1` (a race at
open time surfaces as the engine's own `not_owner` 503; all 503s here mean "try again").
"""

from __future__ import annotations

import re
import socket
from typing import Any

import orjson
import trio

from engine.engine import Engine
from engine.listener import send_all

OWNED_PATH = re.compile(r"^/(?:api/v1/notebooks|embed)/([A-Za-z0-9_-]{1,64})(?:/.*)?$")
MESSAGE = "This notebook is open on another host; retry (the proxy will)."

Scope = dict[str, Any]
Receive = Any
Send = Any


def owned_notebook(path: str) -> str | None:
    """The notebook id of an owner-only path, else None."""
    m = OWNED_PATH.match(path)
    return m.group(1) if m else None


async def owned_elsewhere(engine: Engine, notebook_id: str) -> bool:
    """Whether another live host serves `notebook_id` (never when it is open here)."""
    if engine.registry.get_open(notebook_id) is not None:
        return False
    try:
        return await engine.storage.owner_elsewhere(notebook_id)
    except Exception:  # the database is down: let the route answer (it reports the outage)
        return False


def not_owner_body() -> bytes:
    """The JSON error body of a `not_owner` answer."""
    return orjson.dumps({"error": {"code": "not_owner", "message": MESSAGE}})


class OwnerGuard:
    """ASGI middleware: 503 `not_owner` (Retry-After: 1) for owner-only paths owned elsewhere."""

    def __init__(self, app: Any, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        notebook_id = owned_notebook(str(scope.get("path", "")))
        if notebook_id is not None and await owned_elsewhere(self.engine, notebook_id):
            body = not_owner_body()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", b"1"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start" and message.get("status") == 503:
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"retry-after" for k, _ in headers):
                    message = {**message, "headers": [*headers, (b"retry-after", b"1")]}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


async def refuse_sync_if_not_owner(
    engine: Engine, sock: socket.socket, head: bytes, host_id: str = ""
) -> bool:
    """For a WebSocket upgrade of a notebook owned elsewhere: write the 503 (with `X-Agora-Host`
    when `host_id` is set) and return True."""
    try:
        target = head.split(b" ", 2)[1].decode("latin-1")
    except IndexError:
        return False
    notebook_id = owned_notebook(target.split("?", 1)[0])
    if notebook_id is None or not await owned_elsewhere(engine, notebook_id):
        return False
    body = not_owner_body()
    host = f"x-agora-host: {host_id}\r\n".encode("latin-1", "replace") if host_id else b""
    response = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        + host
        + b"connection: close\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with trio.move_on_after(2):
        await send_all(sock, response)
    return True
