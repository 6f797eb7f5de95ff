"""The API key check every /api/v1 route but the public ones gets (`Authorization: Bearer`)."""

from __future__ import annotations

from quart import request

from api.http import API, ApiError, context

# Routes under /api/v1 that need no API key.
PUBLIC_PATHS = frozenset({f"{API}/openapi.json", f"{API}/docs"})


async def authenticate() -> None:
    """Before every request: refuse an /api/v1 call without a valid key with 401."""
    # Read the whole body (bounded by MAX_CONTENT_LENGTH: 413 beyond) before answering
    # anything, even a 401/404: a response sent while the client is still sending makes the
    # server drop the keep-alive connection, and clients that reuse it see a hang or reset.
    await request.get_data()
    path = request.path
    if not (path == API or path.startswith(API + "/")) or path in PUBLIC_PATHS:
        return
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthorized",
            "An API key is required: send 'Authorization: Bearer <key>'.",
            {"WWW-Authenticate": 'Bearer realm="agora"'},
        )
    if not context().keys.verify(key.strip()):
        raise ApiError(
            401,
            "unauthorized",
            "The API key is not valid (unknown or revoked).",
            {"WWW-Authenticate": 'Bearer realm="agora", error="invalid_token"'},
        )
