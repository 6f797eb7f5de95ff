"""Helpers for the kernel tests: notebooks of code cells, clients that run them and wait."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from engine.ot.model import Cell
from tests.wsclient import SyncClient

FINAL = {"done", "error", "aborted"}


def code_notebook(cells: dict[str, str], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": metadata or {},
        "cells": [
            {
                "id": cid,
                "cell_type": "code",
                "metadata": {},
                "source": src,
                "outputs": [],
                "execution_count": None,
            }
            for cid, src in cells.items()
        ],
    }


async def create(http: httpx.AsyncClient, notebook_id: str, cells: dict[str, str]) -> None:
    r = await http.post("/api/v1/notebooks", json={"id": notebook_id, "notebook": code_notebook(cells)})
    assert r.status_code == 201, r.text


async def token(http: httpx.AsyncClient, notebook_id: str, role: str = "editor", user: str = "u1") -> str:
    r = await http.post(
        "/api/v1/tokens", json={"notebook": notebook_id, "user": {"id": user, "name": user}, "role": role}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def cell(client: SyncClient, cid: str) -> Cell:
    assert client.notebook is not None
    found: Cell = client.notebook.cells[cid]
    return found


def text_of(c: Cell, name: str = "stdout") -> str:
    return "".join(o["text"] for o in c.outputs if o.get("output_type") == "stream" and o.get("name") == name)


async def pump_until_final(client: SyncClient, cells: list[str], timeout: float = 30.0) -> None:
    """Pump until every cell's exec_state is final (in this client's replica)."""
    with trio.fail_after(timeout):
        while not all(cell(client, c).exec_state in FINAL for c in cells):
            await client.pump(timeout)


async def pump_until(client: SyncClient, predicate: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await client.pump(timeout)


async def run_ws(client: SyncClient, cells: list[str], timeout: float = 30.0) -> None:
    """Execute `cells` (that have not run before) from this editor and wait until they all ended."""
    assert all(cell(client, c).exec_state is None for c in cells)
    await client.send({"type": "execute", "cells": cells})
    await pump_until_final(client, cells, timeout)
