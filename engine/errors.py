"""Errors the engine raises to its callers (HTTP layer, WebSocket layer).

Each carries a snake_case `code`, a human `message` and the HTTP status it maps to, so the edges
can turn any of them into the contract's error shape without a lookup table of their own.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: an expected failure with a code, a message and an HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(EngineError):
    status = 404
    code = "not_found"


class Forbidden(EngineError):
    """The caller may not do this (a kicked user's old token, a token of another life). HTTP 403."""

    status = 403
    code = "forbidden"


class StaleToken(EngineError):
    """A valid token that no longer opens anything (minted for an earlier notebook). HTTP 401."""

    status = 401
    code = "token_stale"


class Conflict(EngineError):
    status = 409
    code = "conflict"


class Invalid(EngineError):
    """A notebook, op or field that is well-formed JSON but not acceptable (HTTP 422)."""

    status = 422
    code = "invalid"


class TooLarge(EngineError):
    """Content over a size limit, such as `--notebook-max-bytes` (HTTP 413)."""

    status = 413
    code = "notebook_too_large"


class Unavailable(EngineError):
    """The notebook cannot take writes now (for example its disk failed). HTTP 503."""

    status = 503
    code = "unavailable"
