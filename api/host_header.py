"""`X-Agora-Host` on every HTTP response: which host answered (operators, tests behind a proxy).

An ASGI wrapper rather than a Quart hook, so that it also marks answers the app's own error
handlers never see. The sync WebSocket's handshake adds the same header in `engine.connection`.
"""

from __future__ import annotations

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

HEADER = b"x-agora-host"


def with_host_header(app: ASGIFramework, host_id: str) -> ASGIFramework:
    """`app`, with `X-Agora-Host: host_id` added to every HTTP response start."""
    value = host_id.encode("latin-1", "replace")

    async def wrapped(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_marked(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, value)]}
            await send(message)

        await app(scope, receive, send_marked)

    return wrapped
