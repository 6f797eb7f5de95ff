"""The embed page (contract §3): `GET /embed/{notebook_id}` and its static assets.

The page is a shell: the browser code (built from `web/` into `api/embed_static/`, committed, so no
Node is needed at runtime) reads the user token from the URL fragment or from the parent page's
`postMessage`, then speaks the WebSocket protocol itself. The server never sees the token here
(fragments are not sent), sets no cookie, and answers with a strict Content-Security-Policy:
scripts and styles only from this origin or with the per-response nonce, and `frame-ancestors`
from `AGORA_EMBED_ORIGINS`.

Assets are served under content-hashed names with `Cache-Control: immutable`; the API docs page
(quart-schema's Swagger UI) loads swagger-ui-dist from the same place instead of a CDN.
"""

from __future__ import annotations

import json
import re
import secrets
from functools import lru_cache
from importlib import resources
from typing import Any

from quart import Blueprint, Response
from quart.blueprints import BlueprintSetupState
from quart_schema import hide

from api.http import context

ASSET_PREFIX = "/embed/assets"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|\*")
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".woff2": "font/woff2",
    ".json": "application/json",
}
IMMUTABLE = "public, max-age=31536000, immutable"


@lru_cache(maxsize=1)
def asset_names() -> frozenset[str]:
    """The file names in the built bundle (the only names `/embed/assets/…` answers)."""
    root = resources.files("api").joinpath("embed_static")
    return frozenset(p.name for p in root.iterdir() if p.is_file())


@lru_cache(maxsize=1)
def manifest() -> dict[str, str]:
    """Logical asset name → hashed file name, written by `web/build.mjs`."""
    text = resources.files("api").joinpath("embed_static", "manifest.json").read_text("utf-8")
    data: dict[str, str] = json.loads(text)
    return data


def _read_asset(name: str) -> bytes:
    return resources.files("api").joinpath("embed_static", name).read_bytes()


def parse_origins(text: str) -> list[str]:
    """`AGORA_EMBED_ORIGINS` (comma-separated `scheme://host[:port]`, or `*`) as a list.

    Raises ValueError naming the first entry that is not an origin (a path, a trailing slash,
    quotes): such an entry would silently break `frame-ancestors`.
    """
    out = []
    for raw in text.split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"not an origin (scheme://host[:port] or *): {raw.strip()!r}")
        out.append(origin)
    return out


def content_security_policy(nonce: str, embed_origins: list[str]) -> str:
    """The page's CSP: nothing inline without the nonce, no plugins, no forms, no base rewriting.

    `frame-ancestors` is `'self'` plus the configured origins (just `'self'` when none are set).
    """
    ancestors = " ".join(["'self'", *embed_origins]) if "*" not in embed_origins else "*"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'nonce-{nonce}'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' data: https:",
            "font-src 'self'",
            "connect-src 'self'",
            "frame-src 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors {ancestors}",
        ]
    )


def _json_for_script(data: Any) -> str:
    # Inside <script type="application/json">: "<" escaped so nothing can close the element.
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")


def page_html(notebook_id: str, nonce: str, embed_origins: list[str]) -> str:
    """The HTML shell of the embed page for one notebook."""
    m = manifest()
    config = {"notebook": notebook_id, "nonce": nonce, "origins": embed_origins}
    assets = {"katexCss": f"{ASSET_PREFIX}/{m['katex_css']}"}
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        "<title>Agora notebook</title>"
        f'<link rel="stylesheet" href="{ASSET_PREFIX}/{m["css"]}">'
        f'<script type="application/json" id="agora-config">{_json_for_script(config)}</script>'
        f'<script type="application/json" id="agora-assets">{_json_for_script(assets)}</script>'
        f'<script type="module" nonce="{nonce}" src="{ASSET_PREFIX}/{m["js"]}"></script>'
        '</head><body><div id="app" aria-live="polite"></div></body></html>\n'
    )


blueprint = Blueprint("embed", __name__)


@blueprint.record_once
def _local_swagger_assets(state: BlueprintSetupState) -> None:
    # quart-schema reads these per request; the defaults point at a CDN.
    m = manifest()
    state.app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = f"{ASSET_PREFIX}/{m['swagger_js']}"
    state.app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = f"{ASSET_PREFIX}/{m['swagger_css']}"


def _not_found() -> Response:
    return Response("Not found\n", status=404, content_type="text/plain; charset=utf-8")


@blueprint.get("/embed/<notebook_id>")
@hide  # a page for browsers, not part of the HTTP API
async def embed_page(notebook_id: str) -> Response:
    """The embed page shell: a fresh nonce, the CSP, no cookie, never cached.

    The notebook's existence is not checked here (the page needs no key and learns it from the
    socket); an id that cannot exist is 404.
    """
    if not _ID.fullmatch(notebook_id):
        return _not_found()
    origins = list(context().embed_origins)
    nonce = secrets.token_urlsafe(18)
    return Response(
        page_html(notebook_id, nonce, origins),
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": content_security_policy(nonce, origins),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@blueprint.get(f"{ASSET_PREFIX}/<name>")
@hide
async def embed_asset(name: str) -> Response:
    """One file of the built bundle, cached for a year (its name changes with its content)."""
    if name not in asset_names() or name == "manifest.json":
        return _not_found()
    suffix = name[name.rfind(".") :]
    return Response(
        _read_asset(name),
        content_type=_TYPES.get(suffix, "application/octet-stream"),
        headers={
            "Cache-Control": IMMUTABLE,
            "X-Content-Type-Options": "nosniff",
            "Access-Control-Allow-Origin": "*",
        },
    )
