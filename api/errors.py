"""Every failure leaves the API through one of these handlers, so every error body is
`{"error": {"code", "message"}}`:

- `ApiError` (raised by handlers), `EngineError` (raised by the engine, carrying status and code),
- quart-schema's `RequestSchemaValidationError` (query strings) → 422 `invalid_field`,
- werkzeug `HTTPException` (unknown route 404, wrong method 405, body too large 413, …),
- anything else → logged, 500 `internal`. Bad input must never get there.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from quart import Response, request
from quart_schema import RequestSchemaValidationError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from api.http import ApiError, error_response, first_error
from engine.errors import EngineError
from engine.ipynb import InvalidNotebook

log = logging.getLogger("agora.api")

_HTTP_CODES = {
    400: ("bad_request", "The request is malformed."),
    401: ("unauthorized", "An API key is required."),
    403: ("forbidden", "This is not allowed."),
    404: ("not_found", "There is nothing at this URL."),
    405: ("method_not_allowed", "This method is not allowed on this URL."),
    408: ("request_timeout", "The request body took too long to arrive."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "This content type is not supported."),
    429: ("rate_limited", "Too many requests; slow down."),
}


def register_error_handlers(app: QuartTrio, max_body_bytes: int) -> None:
    """Install the handlers that turn every failure into the JSON error shape."""
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(EngineError)
    async def _engine_error(exc: EngineError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(InvalidNotebook)
    async def _invalid_notebook(exc: InvalidNotebook) -> Response:
        return error_response(422, "invalid_notebook", exc.message)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(exc: RequestSchemaValidationError) -> Response:
        cause = exc.validation_error
        if isinstance(cause, ValidationError):
            return error_response(422, "invalid_field", first_error(cause))
        return error_response(400, "bad_request", "The request body must be a JSON object.")

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code, message = _HTTP_CODES.get(status, ("http_error", exc.description or "HTTP error."))
        headers: dict[str, str] = {}
        if status == 413:
            message = f"The request body is larger than the limit of {max_body_bytes} bytes."
            # The rest of the body is never read: the connection cannot be reused, say so (without
            # this, hypercorn drops it silently and a keep-alive client hangs on its next request).
            headers["Connection"] = "close"
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if status >= 500:
            code = "internal"
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, "internal", "An internal error occurred; it has been logged.")
