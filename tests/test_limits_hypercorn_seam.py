"""server.py runs hypercorn's trio connection handler on sockets our own listener accepted
(hypercorn's public `serve` binds its own sockets and cannot share the port with the sync
endpoint). Those internals are not public API: hypercorn is pinned exactly in pyproject.toml,
and this test fails when the installed version or the signatures server.py relies on change."""

from __future__ import annotations

import inspect
import re
from importlib import metadata
from pathlib import Path

from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

ROOT = Path(__file__).resolve().parent.parent


def _params(fn: object) -> list[str]:
    assert callable(fn)
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_hypercorn_is_pinned_and_installed_at_the_pin() -> None:
    pin = re.search(r'"hypercorn==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None, "pyproject.toml must pin hypercorn exactly (==)"
    assert metadata.version("hypercorn") == pin[1]


def test_the_internal_signatures_server_py_uses() -> None:
    assert _params(TCPServer.__init__) == ["app", "config", "context", "state", "stream"]
    assert inspect.iscoroutinefunction(TCPServer.run) and hasattr(TCPServer, "__await__")
    assert _params(WorkerContext.__init__) == ["max_requests"]
    assert _params(Lifespan.__init__) == ["app", "config", "state"]
    for name in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, name)), name
    assert _params(wrap_app) == ["app", "wsgi_max_body_size", "mode"]


def test_the_stream_surface_tcp_server_reads_and_writes() -> None:
    """TCPServer uses `.socket` (peer and local address), `receive_some`, `send_all`,
    `send_eof` and `aclose` of the stream it is given: our GatedStream provides each."""
    from engine.gate import GatedStream

    source = inspect.getsource(TCPServer)
    for used in ("self.stream.socket", "receive_some", "send_all", "send_eof", "aclose"):
        assert used in source, used
        assert hasattr(GatedStream, used.rsplit(".", 1)[-1]) or used == "self.stream.socket"
