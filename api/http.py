"""What every API module shares: the error type, JSON responses, body parsing, id checks, the
notebook summary, and the per-app context (engine, keys, secret) that handlers reach through
`context()`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import trio
from pydantic import BaseModel, ValidationError
from quart import Response, current_app, request

from api import schemas as s
from engine.errors import Conflict
from engine.ipynb import import_notebook
from engine.ot.model import Notebook
from engine.storage.base import NotebookInfo

if TYPE_CHECKING:  # the engine module pulls in rooms and storage; the API only calls it
    from engine.auth.keys import KeyStore
    from engine.engine import Engine

API = "/api/v1"
API_USER = "api"  # the user recorded for ops made through HTTP (replace, revert)
_THREAD_BODY = 1024 * 1024  # parse bodies larger than this in a worker thread
ID_RE = re.compile(s.ID_PATTERN)
_CONTEXT_KEY = "agora"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the handlers of one app work with."""

    engine: Engine
    keys: KeyStore
    secret: bytes
    public_url: str  # prefixes embed URLs; empty: the request's scheme and host
    max_body_bytes: int
    embed_origins: tuple[str, ...] = ()  # may frame /embed/{id} and post it tokens
    host_id: str = ""  # this host's name (X-Agora-Host, /healthz)


def install_context(app: Any, ctx: ApiContext) -> None:
    """Attach `ctx` to `app`, for `context()` in its handlers."""
    app.extensions[_CONTEXT_KEY] = ctx


def context() -> ApiContext:
    """The context of the app handling the current request."""
    ctx = current_app.extensions[_CONTEXT_KEY]
    assert isinstance(ctx, ApiContext)
    return ctx


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
    """The one error shape: `{"error": {"code", "message"}}` with `status`."""
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def first_error(exc: ValidationError) -> str:
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
        raise ApiError(422, "invalid_field", first_error(exc)) from None


def check_id(notebook_id: str) -> str:
    """A path notebook id; one that cannot exist (bad characters, too long) is simply not found."""
    if not ID_RE.fullmatch(notebook_id):
        raise ApiError(404, "notebook_not_found", f"Notebook {notebook_id[:80]!r} does not exist.")
    return notebook_id


async def to_notebook(ipynb: dict[str, Any]) -> Notebook:
    """Validate and import an uploaded ipynb off the event loop (nbformat validation is slow)."""
    return await trio.to_thread.run_sync(import_notebook, ipynb)


def summary(info: NotebookInfo) -> dict[str, Any]:
    """The notebook summary every create, copy, PUT and revert answers with."""
    return {
        "id": info.id,
        "name": info.name,
        "version": info.version,
        "created": info.created,
        "updated": info.updated,
    }


def conflict_code(exc: Conflict, code: str) -> ApiError:
    """Name a generic engine conflict precisely for the route that raised it."""
    return ApiError(409, code if exc.code == Conflict.code else exc.code, exc.message)


