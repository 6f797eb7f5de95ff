"""Helpers for the embed page's browser tests: Debian's Chromium driven by Playwright's sync API.

Never `playwright install`: the tests use `/usr/bin/chromium` (the Makefile installs it with apt
when missing). A missing Chromium is a failure, not a skip. Screenshots of every page a test
opened are saved when the test fails (the path is printed).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright

from tests.server_process import ServerProcess

CHROMIUM = os.environ.get("AGORA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("AGORA_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "agora-test-artifacts"))


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium; fails (never skips) when the binary is missing."""
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Pages:
    """Opens embed pages and remembers them for failure screenshots; collects page errors."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.opened: list[tuple[str, Page]] = []
        self.errors: list[str] = []

    def open(
        self, name: str, url: str, *, wait_cells: bool = True, before: Any = None, **context: Any
    ) -> Page:
        """A new page (own browser context: no shared storage) at `url`; waits for the first render."""
        ctx = self.browser.new_context(viewport={"width": 1100, "height": 800}, **context)
        page = ctx.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{name}: {e}"))
        page.on("dialog", lambda d: (self.errors.append(f"{name}: dialog {d.message!r}"), d.dismiss()))
        self.opened.append((name, page))
        if before is not None:  # e.g. listeners that must see the first WebSocket
            before(page)
        page.goto(url)
        if wait_cells:
            page.wait_for_function("() => window.agora && window.agora.client.doc !== null", timeout=15000)
        return page

    def embed(
        self, name: str, notebook: str, role: str = "editor", user: str | None = None, **kw: Any
    ) -> Page:
        token = mint(self.server, notebook, role, user or name)
        return self.open(name, f"{self.server.base_url}/embed/{notebook}#token={token}", **kw)

    def screenshots(self, test_name: str) -> Path:
        out = ARTIFACTS / test_name
        out.mkdir(parents=True, exist_ok=True)
        for name, page in self.opened:
            try:
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            except Exception as exc:  # a crashed page still must not hide the real failure
                (out / f"{name}.txt").write_text(f"no screenshot: {exc}")
        return out


def api(server: ServerProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    """One HTTP API call with the test API key; raises on an error status."""
    r = httpx.request(method, f"{server.base_url}{path}", headers=server.headers, timeout=30, **kw)
    r.raise_for_status()
    return r


def mint(server: ServerProcess, notebook: str, role: str, user: str, ttl: int = 3600) -> str:
    """A user token for the embed page."""
    body = {"notebook": notebook, "user": {"id": user, "name": user.title()}, "role": role, "ttl": ttl}
    token: str = api(server, "POST", "/api/v1/tokens", json=body).json()["token"]
    return token


def create(server: ServerProcess, notebook_id: str, cells: list[dict[str, Any]]) -> None:
    """Create a notebook from nbformat cells (code cells get empty outputs unless given)."""
    full = []
    for c in cells:
        c = {"metadata": {}, **c}
        if c["cell_type"] == "code":
            c.setdefault("outputs", [])
            c.setdefault("execution_count", None)
        full.append(c)
    ipynb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": full}
    api(server, "POST", "/api/v1/notebooks", json={"id": notebook_id, "notebook": ipynb})


def server_sources(server: ServerProcess, notebook_id: str) -> dict[str, str]:
    """Cell id → source at the server's head."""
    nb = api(server, "GET", f"/api/v1/notebooks/{notebook_id}/content").json()
    return {
        c["id"]: "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in nb["cells"]
    }


def page_source(page: Page, cell: str) -> str:
    """The page's replica of a cell's source."""
    src: str = page.evaluate("id => window.agora.client.doc.nb.cells.get(id).source", cell)
    return src


def editor_text(page: Page, cell: str) -> str:
    """What the cell's CodeMirror view shows."""
    text: str = page.evaluate(
        "id => { const v = window.agora.view.views.get(id); return v.view.state.doc.toString(); }", cell
    )
    return text


def settled(page: Page) -> bool:
    """Connected and nothing of ours waiting for an ack."""
    return bool(
        page.evaluate(
            "() => { const c = window.agora.client; return c.ws && c.ws.readyState === 1 && c.doc && "
            "c.doc.inflight === null && c.doc.pending.length === 0; }"
        )
    )


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll `predicate` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def embed_env(tmp_path: Path, request: Any, **server_kw: Any) -> Iterator[Pages]:
    """A fresh server and Chromium; screenshots of every opened page if the test failed."""
    server = ServerProcess(tmp_path / "data", **server_kw)
    server.start()
    failed_before = request.session.testsfailed
    try:
        with chromium() as browser:
            pages = Pages(browser, server)
            try:
                yield pages
            finally:
                if request.session.testsfailed > failed_before or pages.errors:
                    print(f"\nembed test artifacts: {pages.screenshots(request.node.name)}")
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
