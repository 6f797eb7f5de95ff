"""The last-resort error handler: an unexpected exception becomes 500 `internal` with the JSON
shape, and is logged. The real server never raises one for any input (see test_api_fuzz), so this
runs the app in-process with an engine stub that fails on purpose."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from api.app import create_app
from engine.auth.keys import KeyStore


class BrokenEngine:
    """Every call fails the way a bug would."""

    async def info(self, notebook_id: str) -> None:
        raise RuntimeError("simulated bug with a secret detail")


async def test_unexpected_exception_is_500_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(BrokenEngine(), keys=KeyStore(tmp_path, ["k"]), secret=b"s")  # type: ignore[arg-type]
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="agora.api"):
        resp = await client.get("/api/v1/notebooks/nb/sessions", headers={"Authorization": "Bearer k"})
    assert resp.status_code == 500
    body = json.loads(await resp.get_data())
    assert body == {
        "error": {"code": "internal", "message": "An internal error occurred; it has been logged."}
    }
    assert "simulated bug" in caplog.text
