"""`agora serve --dev` (what `make serve` runs): a working key, a demo notebook, a live socket URL."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from cli.flags import parse_args
from tests.server_process import ServerProcess
from tests.wsclient import SyncClient


async def test_dev_mode_prints_a_key_and_a_demo_notebook_that_work(tmp_path: Path) -> None:
    server = ServerProcess(data_dir=tmp_path / "data", extra_args=["--dev"])
    server.start()
    try:
        log = server.log()
        key = re.search(r"API key \(dev\):\s+(\S+)", log)
        socket_url = re.search(r"editor socket:\s+(\S+)", log)
        assert key and socket_url, log
        auth = {"Authorization": f"Bearer {key[1]}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth) as http:
            r = await http.get("/api/v1/notebooks/demo/content")
        assert r.status_code == 200 and len(r.json()["cells"]) == 2
        async with SyncClient.connect(socket_url[1]) as editor:
            welcome = await editor.start()
            assert welcome["role"] == "editor"
            await editor.submit([{"t": "text", "id": "hello", "ops": ["# edited live\n"]}])
            await editor.sync_until(welcome["version"] + 1)
    finally:
        assert server.stop() == 0
    server.start()  # a restart keeps the key and the notebook (and does not fail on "demo exists")
    try:
        auth = {"Authorization": f"Bearer {key[1]}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth) as http:
            r = await http.get("/api/v1/notebooks/demo/content")
        assert "".join(r.json()["cells"][1]["source"]).startswith("# edited live")
    finally:
        server.stop()


def test_serve_help_names_every_flags_environment_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Contract §1: `agora serve --help` lists every flag with its environment variable and default."""
    with pytest.raises(SystemExit):
        parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = sorted(set(re.findall(r"\[(--[a-z-]+)", text)) - {"--dev"})
    assert len(flags) >= 25, flags
    options = text.split("options:")[1]
    for flag in flags:
        described = re.search(re.escape(flag) + r"(?: [A-Z_]+)? (.*?)(?= --[a-z]|$)", options)
        assert described, flag
        assert "env AGORA_" in described[1] and "default" in described[1], (flag, described[1])
