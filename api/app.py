"""The HTTP API (contract §1-§2): `create_app(engine, keys=…, secret=…)` returns the Quart-Trio app.

Handlers are thin: parse and validate (pydantic models in `api.schemas`), authorise (the API key
check in `api.auth`), call the `Engine`, shape the JSON. One module per resource, each a
blueprint registered here: `api.operations` (health, metrics), `api.notebooks`, `api.sessions`,
`api.tokens`, `api.kernels`, `api.embed` (the embed page). Every failure leaves through
`api.errors`, so every error body is
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart_schema import HttpSecurityScheme, Info, QuartSchema, Tag
from quart_trio import QuartTrio

from api import embed, kernels, notebooks, operations, sessions, tokens
from api.auth import authenticate
from api.errors import register_error_handlers
from api.http import API, ApiContext, install_context
from api.openapi import AgoraOpenAPI

if TYPE_CHECKING:
    from engine.auth.keys import KeyStore
    from engine.engine import Engine
    from engine.kernels import KernelService

DEFAULT_MAX_BODY = 32 * 1024 * 1024
RESOURCES = (
    operations.blueprint,
    notebooks.blueprint,
    sessions.blueprint,
    tokens.blueprint,
    kernels.blueprint,
    embed.blueprint,
)


def create_app(
    engine: Engine,
    *,
    keys: KeyStore,
    secret: bytes,
    public_url: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY,
    embed_origins: tuple[str, ...] = (),
    kernel_service: KernelService | None = None,
    host_id: str = "",
) -> QuartTrio:
    """Build the HTTP API around `engine`.

    - `keys` decides which `Authorization: Bearer` keys are accepted on /api/v1.
    - `secret` signs the user tokens minted by `POST /api/v1/tokens`.
    - `public_url` (e.g. `https://agora.example.edu`) prefixes `embed_url`; when empty, the
      scheme and host of the request are used.
    - `max_body_bytes`: larger request bodies get 413 `payload_too_large`.
    - `embed_origins`: origins allowed to frame `/embed/{id}` and to post it tokens.
    - `kernel_service` runs cells (`api.kernels`); without it those routes answer 503.
    - `host_id` names this host in `GET /healthz` (several hosts behind a proxy).
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
            Tag(name="kernels", description="Run cells on the notebook's Jupyter kernel."),
            Tag(name="operations", description="Health and metrics (no API key)."),
        ],
    )
    register_error_handlers(app, max_body_bytes)
    install_context(
        app,
        ApiContext(
            engine=engine,
            keys=keys,
            secret=secret,
            public_url=public_url,
            max_body_bytes=max_body_bytes,
            embed_origins=tuple(embed_origins),
            host_id=host_id,
        ),
    )
    kernels.install_kernels(app, kernel_service)
    app.before_request(authenticate)
    for blueprint in RESOURCES:
        app.register_blueprint(blueprint)
    return app
