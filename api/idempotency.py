"""`Idempotency-Key` on PUT content, revert, copy and copies (see `engine.idempotency`).

A route wraps its work in `idempotent(scope, work)`. Without the header the work simply runs.
With it, the first request's answer, success or client error alike, is kept for 24 h and a
repeat gets it again (with `Idempotent-Replayed: true`) without running anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from quart import Response, request

from api.http import ApiError, context, json_response
from engine.errors import EngineError
from engine.ipynb import InvalidNotebook

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"\A[\x21-\x7e]{1,255}\Z")  # visible ASCII, as UUIDs and ULIDs are


def _error(status: int, code: str, message: str) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}


async def idempotent(scope: str, work: Callable[[], Awaitable[Response]]) -> Response:
    """Run `work` once per `Idempotency-Key` within `scope` (a route and notebook id)."""
    key = request.headers.get(HEADER)
    if key is None:
        return await work()
    if not KEY_RE.match(key):
        raise ApiError(400, "invalid_idempotency_key", f"{HEADER} must be 1-255 visible ASCII characters.")
    body = await request.get_data()
    assert isinstance(body, bytes)
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.path.encode() + b"\n" + body
    ).hexdigest()

    async def call() -> tuple[int, Any]:
        try:
            response = await work()
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message)
        except EngineError as exc:
            return _error(exc.status, exc.code, exc.message)
        except InvalidNotebook as exc:
            return _error(422, "invalid_notebook", exc.message)
        return response.status_code, orjson.loads(await response.get_data())

    (status, answer), replayed = await context().engine.idempotency.run(scope, key, fingerprint, call)
    return json_response(answer, status, {"Idempotent-Replayed": "true"} if replayed else None)
