"""What the runner does through Agora's HTTP API before and after a scenario: check the server
and the key, create the notebooks, mint the tokens, read the head, delete what it made."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

API = "/api/v1"
RATE_LIMIT_RETRIES = 30


class CannotRun(Exception):
    """The scenario cannot run against this server (exit code 2)."""


class Api:
    """A keep-alive session against one Agora with one API key."""

    def __init__(self, host: str, api_key: str) -> None:
        self.host = host.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        self.session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=32))

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kw: Any) -> Any:
        """One API call; raises `CannotRun` with the server's error when the status is unexpected."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                r = self.session.request(method, f"{self.host}{path}", timeout=60, **kw)
            except requests.RequestException as exc:
                raise CannotRun(f"{method} {self.host}{path} failed: {exc}") from None
            if r.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                break
            # The server's per-key rate (--http-rate/--http-burst): minting many tokens can hit it.
            retry_after = r.headers.get("Retry-After", "1")
            time.sleep(min(5.0, float(retry_after)) if retry_after.isdigit() else 1.0)
        if r.status_code not in expect:
            raise CannotRun(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else None

    def check(self) -> None:
        """The server answers /healthz and accepts the key."""
        try:
            r = self.session.get(f"{self.host}/healthz", timeout=10)
        except requests.RequestException as exc:
            raise CannotRun(f"server not reachable at {self.host}: {exc}") from None
        if r.status_code != 200:
            raise CannotRun(f"{self.host}/healthz answered {r.status_code}: {r.text[:200]}")
        r = self.session.get(f"{self.host}{API}/notebooks?limit=1", timeout=10)
        if r.status_code == 401:
            raise CannotRun("the API key was refused (401); pass --api-key or set AGORA_API_KEY")
        if r.status_code != 200:
            raise CannotRun(f"GET {API}/notebooks answered {r.status_code}: {r.text[:200]}")

    def create(self, notebook: dict[str, Any], name: str) -> str:
        """Create a notebook with a fresh `lt-…` id; returns the id."""
        nb_id = f"lt-{name}-{secrets.token_hex(5)}"
        self.call("POST", f"{API}/notebooks", (201,), json={"id": nb_id, "name": name, "notebook": notebook})
        return nb_id

    def tokens(self, notebook: str, role: str, n: int, ttl: int) -> list[str]:
        """`n` tokens for `n` distinct users (minted 16 at a time)."""

        def mint(i: int) -> str:
            user = {"id": f"lt-{role}-{i}", "name": f"Load {role} {i}"}
            body = {"notebook": notebook, "user": user, "role": role, "ttl": ttl}
            return str(self.call("POST", f"{API}/tokens", (201,), json=body)["token"])

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(mint, range(n)))

    def head(self, notebook: str) -> int:
        """The notebook's head version."""
        return int(self.call("GET", f"{API}/notebooks/{notebook}")["version"])

    def delete(self, notebook: str) -> None:
        """Delete a notebook (best effort)."""
        try:
            self.session.delete(f"{self.host}{API}/notebooks/{notebook}", timeout=30)
        except requests.RequestException:
            pass


def code_cell(source: str) -> dict[str, Any]:
    """An ipynb code cell without outputs."""
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


def md_cell(source: str) -> dict[str, Any]:
    """An ipynb markdown cell."""
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def notebook(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """An nbformat 4.5 notebook with a python3 kernelspec."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": cells,
    }


def lecture_notebook() -> dict[str, Any]:
    """The classroom notebook: an intro and four shared code cells (editors add their own)."""
    cells = [md_cell("# Live session\nEveryone types in a cell of their own.")]
    cells += [code_cell(f"import math\nx{i} = [math.sqrt(n) for n in range(10)]") for i in range(4)]
    return notebook(cells)


def big_notebook(n_cells: int = 300) -> dict[str, Any]:
    """A course notebook of about 300 KB (class-starts): alternating prose and code with outputs."""
    cells: list[dict[str, Any]] = []
    para = "Pandas provides high-performance, easy-to-use data structures and data analysis tools. " * 9
    for i in range(n_cells):
        if i % 3 == 0:
            cells.append(md_cell(f"## Section {i // 3}\n\n{para}"))
        else:
            cell = code_cell(f"import pandas as pd\ndf{i} = pd.DataFrame({{'a': range({i})}})\ndf{i}.head()")
            cell["outputs"] = [
                {
                    "output_type": "stream",
                    "name": "stdout",
                    "text": "   a  b\n0  0  0\n1  1  1\n2  2  2\n" * 20,
                }
            ]
            cells.append(cell)
    return notebook(cells)


def kernel_notebook() -> dict[str, Any]:
    """The kernels notebook: one cell the preflight runs (editors add their own)."""
    return notebook([md_cell("# Kernel load"), code_cell("print('ready')")])
