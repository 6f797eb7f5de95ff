"""Shared fixtures: the real server on a free loopback port, HTTP and WebSocket helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

import tests.hypothesis_profiles  # noqa: F401  (registers and loads the hypothesis profile)
from tests.pg_cluster import PgCluster
from tests.server_process import ServerProcess, running_server


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster for the whole session (started on first use, then removed)."""
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """A started server with a fresh data dir; stopped (SIGTERM) afterwards, its log clean."""
    with running_server(tmp_path / "data") as proc:
        yield proc


@pytest.fixture
async def server(server_process: ServerProcess) -> AsyncIterator[ServerProcess]:
    """The same server, for async tests (the object has base_url, api_key, data_dir, ws_url)."""
    yield server_process


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with the API key set."""
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as client:
        yield client
