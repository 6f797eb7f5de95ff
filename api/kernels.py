"""Kernel control and execution over HTTP (`…/kernel`, `…/execute`, contract §2 and §8).

The kernel service is optional (an app built without one answers 503 `kernels_unavailable`).
A cell run through HTTP has no connection to ask for input: `input()` raises in the kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response, current_app
from quart_schema import document_request, document_response, tag

from api import schemas as s
from api.http import API, ApiError, check_id, context, json_response, read_body
from api.openapi import errors
from engine.errors import NotFound

if TYPE_CHECKING:
    from engine.kernels import KernelService
    from engine.ot.model import Notebook

blueprint = Blueprint("kernels", __name__)
_KEY = "agora.kernels"


def install_kernels(app: Any, service: KernelService | None) -> None:
    """Give the app's kernel routes their service (None: they answer 503)."""
    app.extensions[_KEY] = service


def kernels() -> KernelService:
    """The app's kernel service; 503 `kernels_unavailable` when it has none."""
    service = current_app.extensions.get(_KEY)
    if service is None:
        raise ApiError(503, "kernels_unavailable", "This server does not run kernels.")
    return service  # type: ignore[no-any-return]


def kernel_summary(notebook_id: str) -> dict[str, Any]:
    """The summary's `kernel` field: `{"state", "name"}`."""
    service = current_app.extensions.get(_KEY)
    if service is None:
        return {"state": "none", "name": None}
    status = service.status(notebook_id)
    return {"state": status.state, "name": status.name}


async def forget_kernel(notebook_id: str) -> None:
    """A deleted notebook's kernel is shut down."""
    service = current_app.extensions.get(_KEY)
    if service is not None:
        await service.forget(notebook_id)


def _state(notebook_id: str) -> dict[str, Any]:
    from engine.kernels import status_json

    return status_json(kernels().status(notebook_id))


@blueprint.get(f"{API}/notebooks/<notebook_id>/kernel")
@tag(["kernels"])
@document_response(s.KernelState)
@errors(404)
async def get_kernel(notebook_id: str) -> Response:
    """The notebook's kernel: state, name, queued cell ids and the running cell."""
    await context().engine.info(check_id(notebook_id))
    return json_response(_state(notebook_id))


@blueprint.post(f"{API}/notebooks/<notebook_id>/kernel")
@tag(["kernels"])
@document_request(s.KernelAction)
@document_response(s.KernelState)
@errors(404, 503)
async def control_kernel(notebook_id: str) -> Response:
    """start, restart, interrupt or shut down the notebook's kernel.

    503 `kernel_limit` when `--max-kernels` kernels already run, `kernel_failed` when it did
    not start.
    """
    await context().engine.info(check_id(notebook_id))
    body = await read_body(s.KernelAction)
    await kernels().control(notebook_id, body.action)
    return json_response(_state(notebook_id))


def _results(nb: Notebook, cells: list[str]) -> list[dict[str, Any]]:
    out = []
    for cid in cells:
        cell = nb.cells.get(cid)
        if cell is not None:
            out.append(
                {
                    "id": cid,
                    "state": cell.exec_state,
                    "execution_count": cell.execution_count,
                    "outputs": cell.outputs,
                }
            )
    return out


@blueprint.post(f"{API}/notebooks/<notebook_id>/execute")
@tag(["kernels"])
@document_request(s.ExecuteRequest)
@document_response(s.ExecuteResponse)
@errors(404, 503)
async def execute(notebook_id: str) -> Response:
    """Queue cells to run (the kernel starts if none runs).

    Without `wait`: 200 with the cells' states (`queued`). With `wait`: 200 once they have
    run, or after `timeout` seconds with their states then (`timed_out: true`; the run goes
    on). Unknown cell ids are 404 `cell_not_found`; markdown and raw cells are skipped.
    """
    engine = context().engine
    await engine.info(check_id(notebook_id))
    body = await read_body(s.ExecuteRequest)
    service = kernels()
    wanted = None if body.cells == "all" else list(body.cells)
    room = await engine.room(notebook_id)
    if wanted is not None:
        missing = await room.call(lambda doc: [c for c in wanted if c not in doc.notebook.cells])
        if missing:
            raise NotFound(f"cell {missing[0]!r} does not exist", code="cell_not_found")
    run = await service.execute(notebook_id, wanted, None)
    timed_out = False
    if body.wait:
        with trio.move_on_after(body.timeout):
            await run.done.wait()
        timed_out = not run.done.is_set()
    room = await engine.room(notebook_id)
    results = await room.call(lambda doc: _results(doc.notebook, run.cells))
    return json_response({"results": results, "timed_out": timed_out})
