"""The HTTP API (contract §1-§2): `create_app(engine, keys=…, secret=…)` returns the Quart-Trio app.

Handlers are thin: parse and validate (pydantic models in `api.schemas`), authorise (the API key
check in `_authenticate`), call the `Engine`, shape the JSON. Every failure leaves through one of
the error handlers registered in `_register_error_handlers`, so every error body is
`{"error": {"code", "message"}}`:

- `ApiError` (raised here), `EngineError` (raised by the engine, carrying status and code),
- quart-schema's `RequestSchemaValidationError` (query strings) → 422 `invalid_field`,
- werkzeug `HTTPException` (unknown route 404, wrong method 405, body too large 413, …),
- anything else → logged, 500 `internal`. Bad input must never get there.

The kernel routes live elsewhere and are added to the same app by the server; they get the API key
check and the error shape from here for free.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import trio
from prometheus_client import generate_latest
from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_schema import (
    HttpSecurityScheme,
    Info,
    OpenAPIProvider,
    QuartSchema,
    RequestSchemaValidationError,
    Tag,
    document_request,
    document_response,
    security_scheme,
    tag,
    validate_querystring,
)
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Rule

from api import schemas as s
from engine.auth.keys import KeyStore
from engine.auth.tokens import mint_token
from engine.errors import Conflict, EngineError
from engine.ipynb import InvalidNotebook, export_notebook, import_notebook
from engine.metrics import REGISTRY
from engine.ot.model import Notebook
from engine.storage.base import NotebookInfo

if TYPE_CHECKING:  # the engine module pulls in rooms and storage; the app only calls it
    from engine.engine import Engine

log = logging.getLogger("agora.api")

API = "/api/v1"
DEFAULT_MAX_BODY = 32 * 1024 * 1024
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ID_RE = re.compile(s.ID_PATTERN)
API_USER = "api"  # the user recorded for ops made through HTTP (replace, revert)
COPY_CONCURRENCY = 8  # bulk copies in flight at once
_THREAD_BODY = 1024 * 1024  # parse bodies larger than this in a worker thread
# Routes under /api/v1 that need no API key.
PUBLIC_PATHS = frozenset({f"{API}/openapi.json", f"{API}/docs"})

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# ---- small helpers ---------------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Encode `data` once with orjson (falls back to escaping lone surrogates, which orjson refuses)."""
    try:
        body = orjson.dumps(data)
    except TypeError:
        body = json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return Response(body, status=status, headers=headers, content_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def _first_error(exc: ValidationError) -> str:
    """One sentence naming the first invalid field and why (pydantic's message)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "The request is invalid."
    err = errors[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    msg = str(err.get("msg", "invalid value")).rstrip(".")
    if err.get("type") == "extra_forbidden":
        msg = "Unknown field"
    return f"{where or 'body'}: {msg}{more}." if where else f"{msg}{more}."


def _parse_json(raw: bytes) -> Any:
    return orjson.loads(raw)


async def read_body(model: type[M]) -> M:
    """The request body as `model`. Content-Type is not checked (curl -d sends a form type).

    Empty body → `{}`. Not JSON → 400 `malformed_json`; JSON but not an object → 400
    `bad_request`; object that does not fit the model → 422 `invalid_field`. Over the size
    limit, reading raises werkzeug's RequestEntityTooLarge → 413.
    """
    raw = await request.get_data()
    assert isinstance(raw, bytes)
    if not raw.strip():
        data: Any = {}
    else:
        try:
            if len(raw) > _THREAD_BODY:
                data = await trio.to_thread.run_sync(_parse_json, raw)
            else:
                data = _parse_json(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "malformed_json", f"The request body is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_field", _first_error(exc)) from None


def check_id(notebook_id: str) -> str:
    """A path notebook id; one that cannot exist (bad characters, too long) is simply not found."""
    if not ID_RE.fullmatch(notebook_id):
        raise ApiError(404, "notebook_not_found", f"Notebook {notebook_id[:80]!r} does not exist.")
    return notebook_id


async def to_notebook(ipynb: dict[str, Any]) -> Notebook:
    """Validate and import an uploaded ipynb off the event loop (nbformat validation is slow)."""
    return await trio.to_thread.run_sync(import_notebook, ipynb)


def summary(info: NotebookInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "version": info.version,
        "created": info.created,
        "updated": info.updated,
    }


def _conflict_code(exc: Conflict, code: str) -> ApiError:
    """Name a generic engine conflict precisely for the route that raised it."""
    return ApiError(409, code if exc.code == Conflict.code else exc.code, exc.message)


# ---- OpenAPI ---------------------------------------------------------------------------------

_RULE_PARAM = re.compile(r"<(?:[^:<>]*:)?([^<>]+)>")
_NO_CONTENT = "_agora_no_content"
_RESPONSE_HEADERS = "_agora_response_headers"
_TEXT_RESPONSE = "_agora_text_response"


def errors(*statuses: int) -> Callable[[F], F]:
    """Document the error responses of a route (401 is added for every /api/v1 route)."""

    def decorator(func: F) -> F:
        for status in statuses:
            func = document_response(s.ErrorResponse, status)(func)
        return func

    return decorator


def no_content(description: str) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        setattr(func, _NO_CONTENT, description)
        return func

    return decorator


class AgoraOpenAPI(OpenAPIProvider):
    """quart-schema's generator plus: 204 responses, response headers, text responses, the id
    pattern on `{notebook_id}` and the 401/413 responses every authenticated route can give."""

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        built, components = super().build_paths(rule)
        # quart-schema's own path regex swallows `<a>/x/<conv:b>` into one parameter: redo it.
        paths = {_RULE_PARAM.sub(r"{\1}", rule.rule): item for item in built.values()}
        func = self._app.view_functions[rule.endpoint]
        for path, item in paths.items():
            for operation in item.values():
                responses = operation["responses"]
                if (desc := getattr(func, _NO_CONTENT, None)) is not None:
                    responses[204] = {"description": desc}
                for status, headers in getattr(func, _RESPONSE_HEADERS, {}).items():
                    responses[status]["headers"] = headers
                if (text := getattr(func, _TEXT_RESPONSE, None)) is not None:
                    responses[200] = text
                if "requestBody" in operation:
                    model = getattr(func, QUART_SCHEMA_REQUEST_ATTRIBUTE)[0]
                    if any(f.is_required() for f in model.model_fields.values()):
                        operation["requestBody"]["required"] = True
                for param in operation["parameters"]:
                    if param["in"] == "path" and param["name"] == "notebook_id":
                        param["schema"] = {"type": "string", "pattern": s.ID_PATTERN}
                if path.startswith(API + "/"):
                    error_ref = {
                        "description": 'An error: `{"error": {"code", "message"}}`.',
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                        },
                    }
                    responses.setdefault(401, error_ref)
                    if "requestBody" in operation:
                        responses.setdefault(400, error_ref)
                        responses.setdefault(413, error_ref)
                        responses.setdefault(422, error_ref)
                    if operation["parameters"]:
                        responses.setdefault(422, error_ref)
        return paths, components

    def schema(self) -> dict[str, Any]:
        doc = super().schema()
        doc["components"]["schemas"].setdefault(
            "ErrorResponse", s.ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for name, sub in (
            s.ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            doc["components"]["schemas"].setdefault(name, sub)
        doc["components"]["schemas"]["ErrorResponse"].pop("$defs", None)
        return doc


# ---- the app ---------------------------------------------------------------------------------


def create_app(
    engine: Engine,
    *,
    keys: KeyStore,
    secret: bytes,
    public_url: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> QuartTrio:
    """Build the HTTP API around `engine`.

    - `keys` decides which `Authorization: Bearer` keys are accepted on /api/v1.
    - `secret` signs the user tokens minted by `POST /api/v1/tokens`.
    - `public_url` (e.g. `https://agora.example.edu`) prefixes `embed_url`; when empty, the
      scheme and host of the request are used.
    - `max_body_bytes`: larger request bodies get 413 `payload_too_large`.
    """
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    QuartSchema(
        app,
        openapi_path=f"{API}/openapi.json",
        swagger_ui_path=f"{API}/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=AgoraOpenAPI,
        info=Info(
            title="Agora",
            version="1",
            description=(
                "Live collaborative Jupyter notebooks for learning platforms. Every /api/v1 call "
                "but this document needs `Authorization: Bearer <api key>`. Errors are always "
                '`{"error": {"code", "message"}}`.'
            ),
        ),
        security_schemes={"apiKey": HttpSecurityScheme(scheme="bearer", bearer_format="API key")},
        security=[{"apiKey": []}],
        tags=[
            Tag(name="notebooks", description="Create, read, change, copy and delete notebooks."),
            Tag(name="sessions", description="Who is connected to a notebook."),
            Tag(name="tokens", description="Signed user tokens for the embed page."),
            Tag(name="operations", description="Health and metrics (no API key)."),
        ],
    )
    _register_error_handlers(app, max_body_bytes)

    @app.before_request
    async def _authenticate() -> None:
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
        if not keys.verify(key.strip()):
            raise ApiError(
                401,
                "unauthorized",
                "The API key is not valid (unknown or revoked).",
                {"WWW-Authenticate": 'Bearer realm="agora", error="invalid_token"'},
            )

    # ---- operations ---------------------------------------------------------------------

    @app.get("/healthz")
    @tag(["operations"])
    @security_scheme([])
    @document_response(s.HealthResponse)
    async def healthz() -> Response:
        """Health check: 200 once the server is ready to serve."""
        return json_response({"status": "ok"})

    @app.get("/metrics")
    @tag(["operations"])
    @security_scheme([])
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format 0.0.4)."""
        return Response(generate_latest(REGISTRY), status=200, content_type=METRICS_CONTENT_TYPE)

    setattr(
        metrics,
        _TEXT_RESPONSE,
        {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}},
    )

    # ---- notebooks ----------------------------------------------------------------------

    @app.post(f"{API}/notebooks")
    @tag(["notebooks"])
    @document_request(s.CreateNotebookRequest)
    @document_response(s.NotebookSummary, 201)
    @errors(409)
    async def create_notebook() -> Response:
        """Create a notebook.

        With `notebook`, the upload is validated with nbformat (nbformat 4; 1-3 are upgraded) and
        becomes version 0; without it the notebook starts empty. 409 `notebook_exists` when the
        chosen id is taken.
        """
        body = await read_body(s.CreateNotebookRequest)
        nb = await to_notebook(body.notebook) if body.notebook is not None else Notebook()
        try:
            info = await engine.create_notebook(body.id, body.name, nb)
        except Conflict as exc:
            raise _conflict_code(exc, "notebook_exists") from None
        return json_response(summary(info), 201)

    @app.get(f"{API}/notebooks")
    @tag(["notebooks"])
    @validate_querystring(s.ListQuery)
    @document_response(s.NotebookList)
    async def list_notebooks(query_args: s.ListQuery) -> Response:
        """List notebooks in id order, one page at a time."""
        infos = await engine.list_notebooks(query_args.cursor, query_args.limit + 1)
        page = infos[: query_args.limit]
        more = len(infos) > query_args.limit
        return json_response(
            {"items": [summary(i) for i in page], "next_cursor": page[-1].id if more and page else None}
        )

    @app.get(f"{API}/notebooks/<notebook_id>")
    @tag(["notebooks"])
    @document_response(s.NotebookDetail)
    @errors(404)
    async def get_notebook(notebook_id: str) -> Response:
        """A notebook's summary, live connection counts and kernel state."""
        info = await engine.info(check_id(notebook_id))
        counts = engine.connections(notebook_id)
        return json_response(
            {
                **summary(info),
                "connections": {"viewers": counts.viewers, "editors": counts.editors},
                "kernel": {"state": "none", "name": None},
            }
        )

    @app.delete(f"{API}/notebooks/<notebook_id>")
    @tag(["notebooks"])
    @no_content("Deleted.")
    @errors(404)
    async def delete_notebook(notebook_id: str) -> Response:
        """Delete a notebook and its history; connected clients are closed with code 4404."""
        await engine.delete_notebook(check_id(notebook_id))
        return Response(b"", status=204)

    @app.get(f"{API}/notebooks/<notebook_id>/content")
    @tag(["notebooks"])
    @validate_querystring(s.ContentQuery)
    @document_response(s.NotebookDocument)
    @errors(404)
    async def get_content(notebook_id: str, query_args: s.ContentQuery) -> Response:
        """The notebook as nbformat 4.5 JSON, at head or at a past `version`.

        The header `X-Agora-Version` carries the version answered. 404 for a version above head.
        """
        nb, version = await engine.content(check_id(notebook_id), query_args.version)
        doc = await trio.to_thread.run_sync(export_notebook, nb)
        return json_response(doc, headers={"X-Agora-Version": str(version)})

    setattr(
        get_content,
        _RESPONSE_HEADERS,
        {200: {"X-Agora-Version": {"description": "The version answered.", "schema": {"type": "integer"}}}},
    )

    @app.put(f"{API}/notebooks/<notebook_id>/content")
    @tag(["notebooks"])
    @document_request(s.ReplaceContentRequest)
    @document_response(s.NotebookSummary)
    @errors(404, 409)
    async def put_content(notebook_id: str) -> Response:
        """Replace the content.

        Applied as ordinary ops (by user `api`), so connected clients see the change live. With
        `base_version`, 409 `version_conflict` unless it is still head.
        """
        check_id(notebook_id)
        body = await read_body(s.ReplaceContentRequest)
        nb = await to_notebook(body.notebook)
        try:
            info = await engine.replace_content(notebook_id, nb, body.base_version, API_USER)
        except Conflict as exc:
            raise _conflict_code(exc, "version_conflict") from None
        return json_response(summary(info))

    @app.post(f"{API}/notebooks/<notebook_id>/copy")
    @tag(["notebooks"])
    @document_request(s.CopyRequest)
    @document_response(s.NotebookSummary, 201)
    @errors(404, 409)
    async def copy_notebook(notebook_id: str) -> Response:
        """Copy the head content to a new notebook (hand out a worksheet)."""
        check_id(notebook_id)
        body = await read_body(s.CopyRequest)
        try:
            info = await engine.copy_notebook(notebook_id, body.id, body.name)
        except Conflict as exc:
            raise _conflict_code(exc, "notebook_exists") from None
        return json_response(summary(info), 201)

    @app.post(f"{API}/notebooks/<notebook_id>/copies")
    @tag(["notebooks"])
    @document_request(s.CopiesRequest)
    @document_response(s.CopiesResponse)
    @errors(404)
    async def bulk_copy(notebook_id: str) -> Response:
        """Copy the head content to many new notebooks (one per student).

        Answers 200 with one result per target, in order: `created`, `exists` (the id was taken;
        that notebook is left alone) or `error` with the error. 404 if the source is missing.
        """
        check_id(notebook_id)
        body = await read_body(s.CopiesRequest)
        await engine.info(notebook_id)
        results: list[dict[str, Any]] = [{} for _ in body.targets]
        limiter = trio.CapacityLimiter(COPY_CONCURRENCY)

        async def one(index: int, target: s.CopyTarget) -> None:
            async with limiter:
                try:
                    await engine.copy_notebook(notebook_id, target.id, target.name)
                    results[index] = {"id": target.id, "status": "created"}
                except Conflict:
                    results[index] = {"id": target.id, "status": "exists"}
                except EngineError as exc:
                    results[index] = {
                        "id": target.id,
                        "status": "error",
                        "error": {"code": exc.code, "message": exc.message},
                    }

        async with trio.open_nursery() as nursery:
            for index, target in enumerate(body.targets):
                nursery.start_soon(one, index, target)
        return json_response({"results": results})

    @app.get(f"{API}/notebooks/<notebook_id>/history")
    @tag(["notebooks"])
    @validate_querystring(s.HistoryQuery)
    @document_response(s.HistoryPage)
    @errors(404)
    async def history(notebook_id: str, query_args: s.HistoryQuery) -> Response:
        """Committed ops with `v > since`, oldest first, at most `limit`."""
        ops = await engine.history(check_id(notebook_id), query_args.since, query_args.limit + 1)
        page = ops[: query_args.limit]
        more = len(ops) > query_args.limit
        return json_response(
            {"items": [op.history_item() for op in page], "next_since": page[-1].v if more and page else None}
        )

    @app.post(f"{API}/notebooks/<notebook_id>/revert")
    @tag(["notebooks"])
    @document_request(s.RevertRequest)
    @document_response(s.NotebookSummary)
    @errors(404)
    async def revert(notebook_id: str) -> Response:
        """Bring head back to a past version's content with new ops (history is kept)."""
        check_id(notebook_id)
        body = await read_body(s.RevertRequest)
        info = await engine.revert(notebook_id, body.version, API_USER)
        return json_response(summary(info))

    # ---- sessions -----------------------------------------------------------------------

    @app.get(f"{API}/notebooks/<notebook_id>/sessions")
    @tag(["sessions"])
    @document_response(s.SessionsResponse)
    @errors(404)
    async def sessions(notebook_id: str) -> Response:
        """Who is connected: editors with user and cursor, and the number of viewers."""
        await engine.info(check_id(notebook_id))
        now = engine.sessions(notebook_id)
        return json_response(
            {
                "viewers": now.viewers,
                "editors": [{"client": e.client, "user": e.user, "cursor": e.cursor} for e in now.editors],
            }
        )

    @app.delete(f"{API}/notebooks/<notebook_id>/sessions/<path:user_id>")
    @tag(["sessions"])
    @no_content("Disconnected (also when that user had no connection).")
    @errors(404)
    async def kick(notebook_id: str, user_id: str) -> Response:
        """Disconnect every connection of that user to the notebook (close code 4403)."""
        await engine.info(check_id(notebook_id))
        await engine.kick(notebook_id, user_id)
        return Response(b"", status=204)

    # ---- tokens -------------------------------------------------------------------------

    @app.post(f"{API}/tokens")
    @tag(["tokens"])
    @document_request(s.TokenRequest)
    @document_response(s.TokenResponse, 201)
    @errors(404)
    async def create_token() -> Response:
        """Mint a signed user token for the embed page (and the page's URL).

        Stateless: any host with the same secret accepts it. 404 if the notebook does not exist.
        """
        body = await read_body(s.TokenRequest)
        await engine.info(body.notebook)
        expires = int(time.time()) + body.ttl
        user = body.user.model_dump(exclude_none=True)
        token = mint_token(secret, body.notebook, user, body.role, expires)
        base = public_url.rstrip("/") or request.host_url.rstrip("/")
        return json_response(
            {"token": token, "expires": expires, "embed_url": f"{base}/embed/{body.notebook}#token={token}"},
            201,
        )

    return app


# ---- errors ----------------------------------------------------------------------------------

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


def _register_error_handlers(app: QuartTrio, max_body_bytes: int) -> None:
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
            return error_response(422, "invalid_field", _first_error(cause))
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
