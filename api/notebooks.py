"""The notebook resource: create, list, read, replace, copy, history, revert, delete."""

from __future__ import annotations

from typing import Any

import orjson
import trio
from quart import Blueprint, Response
from quart_schema import document_request, document_response, tag, validate_querystring

from api import schemas as s
from api.http import (
    API,
    API_USER,
    ID_RE,
    check_id,
    conflict_code,
    context,
    json_response,
    read_body,
    summary,
    to_notebook,
)
from api.idempotency import idempotent
from api.kernels import forget_kernel, kernel_summary
from api.openapi import errors, no_content, response_headers
from engine.errors import Conflict
from engine.ipynb import export_notebook
from engine.ot.model import Notebook

COPY_CONCURRENCY = 8  # bulk copies in flight at once

blueprint = Blueprint("notebooks", __name__)


@blueprint.post(f"{API}/notebooks")
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
        info = await context().engine.create_notebook(body.id, body.name, nb)
    except Conflict as exc:
        raise conflict_code(exc, "notebook_exists") from None
    return json_response(summary(info), 201)


@blueprint.get(f"{API}/notebooks")
@tag(["notebooks"])
@validate_querystring(s.ListQuery)
@document_response(s.NotebookList)
async def list_notebooks(query_args: s.ListQuery) -> Response:
    """List notebooks in id order, one page at a time."""
    infos = await context().engine.list_notebooks(query_args.cursor, query_args.limit + 1)
    page = infos[: query_args.limit]
    more = len(infos) > query_args.limit
    return json_response(
        {"items": [summary(i) for i in page], "next_cursor": page[-1].id if more and page else None}
    )


@blueprint.get(f"{API}/notebooks/<notebook_id>")
@tag(["notebooks"])
@document_response(s.NotebookDetail)
@errors(404)
async def get_notebook(notebook_id: str) -> Response:
    """A notebook's summary, live connection counts and kernel state."""
    engine = context().engine
    info = await engine.info(check_id(notebook_id))
    counts = engine.connections(notebook_id)
    return json_response(
        {
            **summary(info),
            "connections": {"viewers": counts.viewers, "editors": counts.editors},
            "kernel": kernel_summary(notebook_id),
        }
    )


@blueprint.delete(f"{API}/notebooks/<notebook_id>")
@tag(["notebooks"])
@no_content("Deleted.")
@errors(404)
async def delete_notebook(notebook_id: str) -> Response:
    """Delete a notebook and its history; connected clients are closed with code 4404."""
    await context().engine.delete_notebook(check_id(notebook_id))
    await forget_kernel(notebook_id)
    return Response(b"", status=204)


@blueprint.get(f"{API}/notebooks/<notebook_id>/content")
@tag(["notebooks"])
@validate_querystring(s.ContentQuery)
@document_response(s.NotebookDocument)
@errors(404)
async def get_content(notebook_id: str, query_args: s.ContentQuery) -> Response:
    """The notebook as nbformat 4.5 JSON, at head or at a past `version`.

    The header `X-Agora-Version` carries the version answered. 404 for a version above head.
    """
    nb, version = await context().engine.content(check_id(notebook_id), query_args.version)
    doc = await trio.to_thread.run_sync(export_notebook, nb)
    return json_response(doc, headers={"X-Agora-Version": str(version)})


response_headers(
    get_content,
    {200: {"X-Agora-Version": {"description": "The version answered.", "schema": {"type": "integer"}}}},
)


@blueprint.put(f"{API}/notebooks/<notebook_id>/content")
@tag(["notebooks"])
@document_request(s.ReplaceContentRequest)
@document_response(s.NotebookSummary)
@errors(404, 409)
async def put_content(notebook_id: str) -> Response:
    """Replace the content.

    Applied as ordinary ops (by user `api`), so connected clients see the change live. With
    `base_version`, 409 `version_conflict` unless it is still head.
    """

    async def work() -> Response:
        check_id(notebook_id)
        body = await read_body(s.ReplaceContentRequest)
        nb = await to_notebook(body.notebook)
        try:
            info = await context().engine.replace_content(notebook_id, nb, body.base_version, API_USER)
        except Conflict as exc:
            raise conflict_code(exc, "version_conflict") from None
        return json_response(summary(info))

    return await idempotent(f"put_content:{notebook_id}", work)


@blueprint.post(f"{API}/notebooks/<notebook_id>/copy")
@tag(["notebooks"])
@document_request(s.CopyRequest)
@document_response(s.NotebookSummary, 201)
@errors(404, 409)
async def copy_notebook(notebook_id: str) -> Response:
    """Copy the head content to a new notebook (hand out a worksheet)."""

    async def work() -> Response:
        check_id(notebook_id)
        body = await read_body(s.CopyRequest)
        try:
            info = await context().engine.copy_notebook(notebook_id, body.id, body.name)
        except Conflict as exc:
            raise conflict_code(exc, "notebook_exists") from None
        return json_response(summary(info), 201)

    return await idempotent(f"copy:{notebook_id}", work)


@blueprint.post(f"{API}/notebooks/<notebook_id>/copies")
@tag(["notebooks"])
@document_request(s.CopiesRequest)
@document_response(s.CopiesResponse)
@errors(404)
async def bulk_copy(notebook_id: str) -> Response:
    """Copy the head content to many new notebooks (one per student).

    Answers 200 with one result per target, in order: `created`, `exists` (the id was taken;
    that notebook is left alone) or `error` with the error. 404 if the source is missing.
    """

    async def work() -> Response:
        engine = context().engine
        check_id(notebook_id)
        body = await read_body(s.CopiesRequest)
        results: list[dict[str, Any] | None] = [None] * len(body.targets)
        valid: list[tuple[int, str, str | None]] = []
        for index, target in enumerate(body.targets):
            results[index] = refused = _refused_target(target)
            if refused is None:
                valid.append((index, target.id, target.name))
        outcomes = await engine.copy_many(notebook_id, [(t, n) for _, t, n in valid], COPY_CONCURRENCY)
        for (index, _, _), outcome in zip(valid, outcomes, strict=True):
            if outcome.status == "error":
                results[index] = _copy_error(outcome.id, outcome.code or "error", outcome.message or "")
            else:
                results[index] = {"id": outcome.id, "status": outcome.status}
        return json_response({"results": results})

    return await idempotent(f"copies:{notebook_id}", work)


def _refused_target(target: s.CopyTarget) -> dict[str, Any] | None:
    """The `error` result of a target whose id or name is invalid; None for a good one."""
    if not isinstance(target.id, str) or not ID_RE.fullmatch(target.id):
        return _copy_error(target.id, "invalid_id", "The id must match [A-Za-z0-9_-]{1,64}.")
    name = target.name
    if name is not None and not (isinstance(name, str) and 1 <= len(name) <= 200):
        return _copy_error(target.id, "invalid_name", "The name must have 1 to 200 characters.")
    return None


def _copy_error(target_id: Any, code: str, message: str) -> dict[str, Any]:
    shown = target_id if isinstance(target_id, str) else orjson.dumps(target_id).decode()
    return {"id": shown, "status": "error", "error": {"code": code, "message": message}}


@blueprint.get(f"{API}/notebooks/<notebook_id>/history")
@tag(["notebooks"])
@validate_querystring(s.HistoryQuery)
@document_response(s.HistoryPage)
@errors(404)
async def history(notebook_id: str, query_args: s.HistoryQuery) -> Response:
    """Committed ops with `v > since`, oldest first, at most `limit`."""
    ops = await context().engine.history(check_id(notebook_id), query_args.since, query_args.limit + 1)
    page = ops[: query_args.limit]
    more = len(ops) > query_args.limit
    return json_response(
        {"items": [op.history_item() for op in page], "next_since": page[-1].v if more and page else None}
    )


@blueprint.post(f"{API}/notebooks/<notebook_id>/revert")
@tag(["notebooks"])
@document_request(s.RevertRequest)
@document_response(s.NotebookSummary)
@errors(404)
async def revert(notebook_id: str) -> Response:
    """Bring head back to a past version's content with new ops (history is kept)."""

    async def work() -> Response:
        check_id(notebook_id)
        body = await read_body(s.RevertRequest)
        info = await context().engine.revert(notebook_id, body.version, API_USER)
        return json_response(summary(info))

    return await idempotent(f"revert:{notebook_id}", work)
