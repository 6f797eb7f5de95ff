"""`make dist` (contract §10): `agora.pyz` runs `serve` with nothing installed but Python.

Built by deploy/build-pyz.sh (what `make dist` runs) into a temp dir, copied elsewhere and run
from there by the interpreter of a fresh `venv --without-pip` in isolated mode (`-I`): empty
site-packages, no PYTHONPATH, no user site, a bare environment. Everything it imports must come
out of the zipapp.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import trio

from tests.server_process import ROOT, free_port
from tests.wsclient import SyncClient

PACKAGES = ("api", "engine", "protocol")
INSERT_C1 = {"t": "cell_insert", "id": "c1", "pos": "m", "cell": {"cell_type": "code", "source": "hi"}}


def package_data() -> list[str]:
    """Every tracked non-Python file inside the shipped packages (the embed bundle, vendored assets…)."""
    listed = subprocess.run(
        ["git", "ls-files", "--", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [p for p in listed if not p.endswith(".py") and (ROOT / p).is_file()]


@pytest.mark.slow
def test_pyz_serves_with_nothing_installed(tmp_path: Path) -> None:
    build = tmp_path / "build" / "agora.pyz"
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build-pyz.sh"), str(build)],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not (ROOT / "build").exists()

    names = set(zipfile.ZipFile(build).namelist())
    assert "site-packages/server.py" in names
    for path in package_data():
        assert f"site-packages/{path}" in names, f"{path} is not package data (pyproject package-data)"
    assert not any(n.startswith(("site-packages/pytest/", "site-packages/tests/")) for n in names)

    run = tmp_path / "elsewhere"
    run.mkdir()
    pyz = run / "agora.pyz"
    shutil.copy(build, pyz)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(run / "venv")], check=True, timeout=120
    )
    python = str(run / "venv" / "bin" / "python")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "SHIV_ROOT": str(tmp_path / "shiv"),  # where the zipapp unpacks its wheels once
        "AGORA_API_KEYS": "pyz-key",
        "AGORA_SECRET": "pyz-secret-0123456789",
    }
    bare = subprocess.run([python, "-I", "-c", "import trio"], env=env, capture_output=True, timeout=60)
    assert bare.returncode != 0  # the interpreter alone has none of the dependencies

    help_text = subprocess.run(
        [python, "-I", "agora.pyz", "serve", "--help"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "--data-dir" in help_text.stdout and "--host-id" in help_text.stdout

    port = free_port()
    log = open(tmp_path / "pyz.log", "wb")
    proc = subprocess.Popen(
        [python, "-I", "agora.pyz", "serve", "--port", str(port), "--data-dir", "data"],
        cwd=run,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer pyz-key"}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "pyz.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "pyz.log").read_text()
            time.sleep(0.1)
        created = httpx.post(f"{base}/api/v1/notebooks", headers=headers, json={"id": "pyz-1"})
        assert created.status_code == 201, created.text
        token = httpx.post(
            f"{base}/api/v1/tokens",
            headers=headers,
            json={"notebook": "pyz-1", "user": {"id": "u"}, "role": "editor"},
        ).json()["token"]

        async def edit() -> None:
            async with SyncClient.connect(
                f"ws://127.0.0.1:{port}/api/v1/notebooks/pyz-1/ws?token={token}"
            ) as ws:
                await ws.start()
                await ws.submit([INSERT_C1])
                await ws.sync_until(1)

        trio.run(edit)
        content = httpx.get(f"{base}/api/v1/notebooks/pyz-1/content", headers=headers)
        assert [c["source"] for c in content.json()["cells"]] == ["hi"]
        docs = httpx.get(f"{base}/api/v1/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["Content-Type"]
        # The embed page and its hashed assets come out of the zipapp too.
        page = httpx.get(f"{base}/embed/pyz-1")
        assert page.status_code == 200 and "content-security-policy" in page.headers
        for asset in re.findall(r'(?:href|src)="(/embed/assets/[^"]+)"', page.text + docs.text):
            assert httpx.get(f"{base}{asset}").status_code == 200, asset
        assert (run / "data" / "notebooks" / "pyz-1").is_dir()  # the data dir is relative to the cwd
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert code == 0
    assert "Traceback" not in (tmp_path / "pyz.log").read_text()
