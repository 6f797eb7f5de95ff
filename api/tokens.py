"""`POST /api/v1/tokens`: signed user tokens for the embed page and the sync socket."""

from __future__ import annotations

import time

from quart import Blueprint, Response, request
from quart_schema import document_request, document_response, tag

from api import schemas as s
from api.http import API, context, json_response, read_body
from api.openapi import errors
from engine.auth.tokens import mint_token

blueprint = Blueprint("tokens", __name__)


@blueprint.post(f"{API}/tokens")
@tag(["tokens"])
@document_request(s.TokenRequest)
@document_response(s.TokenResponse, 201)
@errors(404)
async def create_token() -> Response:
    """Mint a signed user token for the embed page (and the page's URL).

    Stateless: any host with the same secret accepts it. 404 if the notebook does not exist.
    The token is bound to this life of the notebook (deleting it and creating another with the
    same id invalidates it) and carries its issue time (a later kick of the user refuses it).
    """
    ctx = context()
    body = await read_body(s.TokenRequest)
    user = body.user.model_dump(exclude_none=True)
    incarnation, issued = await ctx.engine.token_grant(body.notebook, str(user["id"]))
    expires = int(time.time()) + body.ttl
    token = mint_token(
        ctx.secret, body.notebook, user, body.role, expires, incarnation=incarnation, issued=issued
    )
    base = ctx.public_url.rstrip("/") or request.host_url.rstrip("/")
    return json_response(
        {"token": token, "expires": expires, "embed_url": f"{base}/embed/{body.notebook}#token={token}"},
        201,
    )
