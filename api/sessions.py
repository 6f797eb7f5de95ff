"""Who is connected to a notebook, and disconnecting a user (`…/sessions`)."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, tag

from api import schemas as s
from api.http import API, check_id, context, json_response
from api.openapi import errors, no_content

blueprint = Blueprint("sessions", __name__)


@blueprint.get(f"{API}/notebooks/<notebook_id>/sessions")
@tag(["sessions"])
@document_response(s.SessionsResponse)
@errors(404)
async def sessions(notebook_id: str) -> Response:
    """Who is connected: editors with user and cursor, and the number of viewers."""
    engine = context().engine
    await engine.info(check_id(notebook_id))
    now = engine.sessions(notebook_id)
    return json_response(
        {
            "viewers": now.viewers,
            "editors": [{"client": e.client, "user": e.user, "cursor": e.cursor} for e in now.editors],
        }
    )


@blueprint.delete(f"{API}/notebooks/<notebook_id>/sessions/<path:user_id>")
@tag(["sessions"])
@no_content("Disconnected (also when that user had no connection).")
@errors(404)
async def kick(notebook_id: str, user_id: str) -> Response:
    """Disconnect every connection of that user to the notebook (close code 4403)."""
    engine = context().engine
    await engine.info(check_id(notebook_id))
    await engine.kick(notebook_id, user_id)
    return Response(b"", status=204)
