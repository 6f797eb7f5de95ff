"""The bundled locust scenarios, through their real command line against the real server.

Locust monkey-patches its process with gevent, so it only ever runs as a subprocess here, in
its own virtualenv (`.venv-locust`, made once by `loadtest/locust/run --install` and reused).
Latency limits are relaxed far beyond anything loopback produces: these are smoke runs of the
machinery (set-up, users, custom metrics, CSVs, exit codes), not measurements.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.nginx_process import running_proxy
from tests.server_process import ROOT, ServerProcess

RUN = ROOT / "loadtest" / "locust" / "run"
RELAXED = ["--max-p99-latency", "10000", "--max-p99-welcome", "20000", "--max-p99-output", "60000"]


@pytest.fixture(scope="session")
def locust_venv() -> None:
    """Create `.venv-locust` once (a pip install of locust: about a minute on a clean clone)."""
    result = subprocess.run([str(RUN), "--install"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def run(
    scenario: str, server: ServerProcess, *args: str, key: str | None = None, host: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`loadtest/locust/run SCENARIO` against `server` (or `host`, e.g. a proxy in front of it)."""
    cmd = [str(RUN), scenario, "--host", host or server.base_url, "--api-key", key or server.api_key, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def ws_rows(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        return {r["Name"]: r for r in csv.DictReader(f) if r["Type"] == "WS"}


def count(row: dict[str, str]) -> int:
    return int(row["Request Count"])


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


def test_classroom_smoke(locust_venv: None, server_process: ServerProcess, tmp_path: Path) -> None:
    viewers, editors = 4, 2
    prefix = tmp_path / "classroom"
    result = run(
        "classroom", server_process, "--viewers", str(viewers), "--editors", str(editors),
        "--rate", "4", "--duration", "3", "--csv", str(prefix), *RELAXED,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    rows = ws_rows(prefix)
    assert count(rows["welcome"]) == viewers + editors
    # Every acknowledged op but each editor's cell insert carries one edit marker, and every
    # viewer must have timed every one of them: nothing lost, nothing counted twice.
    edits = count(rows["ack"]) - editors
    assert edits > 0, explain(result)
    assert count(rows["edit→viewer"]) == viewers * edits, explain(result)
    assert all(r["Failure Count"] == "0" for r in rows.values()), explain(result)
    assert "PASS  p99 edit→viewer" in result.stdout
    assert "delivery: 1.00000 over 4 viewers" in result.stdout
    assert server_process.proc is not None
    assert f"pid {server_process.proc.pid})" in result.stdout, explain(result)
    assert "CPU load generator:" in result.stdout


def test_class_starts_smoke(locust_venv: None, server_process: ServerProcess, tmp_path: Path) -> None:
    prefix = tmp_path / "starts"
    result = run(
        "class-starts", server_process, "--viewers", "6", "--editors", "1", "--join-window", "2",
        "--duration", "3", "--csv", str(prefix), *RELAXED,
    )  # fmt: skip
    assert result.returncode == 0, explain(result)
    rows = ws_rows(prefix)
    assert count(rows["welcome"]) == 7
    # The 300-cell notebook's welcome is large: every viewer got all of it.
    assert float(rows["welcome"]["Average Content Size"]) > 250_000
    assert "PASS  p99 welcome" in result.stdout


def test_platform_smoke(locust_venv: None, server_process: ServerProcess, tmp_path: Path) -> None:
    prefix = tmp_path / "platform"
    result = run(
        "platform", server_process, "--users", "2", "--rate", "8", "--duration", "3", "--csv", str(prefix)
    )
    assert result.returncode == 0, explain(result)
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] != "Aggregated"]
    assert sum(int(r["Request Count"]) for r in rows) >= 10, explain(result)
    assert all(r["Failure Count"] == "0" for r in rows), explain(result)
    assert {"/tokens", "/notebooks/[id]/content"} <= {r["Name"] for r in rows}, explain(result)


def test_kernels_scenario(locust_venv: None, server_process: ServerProcess, tmp_path: Path) -> None:
    """Exit 2 with a clear message while the server runs no kernels; a real run once it does."""
    headers = server_process.headers
    base = server_process.base_url
    httpx.post(f"{base}/api/v1/notebooks", json={"id": "probe"}, headers=headers).raise_for_status()
    has_kernels = httpx.get(f"{base}/api/v1/notebooks/probe/kernel", headers=headers).status_code == 200
    prefix = tmp_path / "kernels"
    result = run(
        "kernels", server_process, "--viewers", "3", "--editors", "1", "--rate", "1", "--duration", "4",
        "--csv", str(prefix), *RELAXED,
    )  # fmt: skip
    if not has_kernels:
        assert result.returncode == 2, explain(result)
        assert "kernels are not available" in result.stderr, explain(result)
        assert not Path(f"{prefix}_stats.csv").exists()
        return
    assert result.returncode == 0, explain(result)
    rows = ws_rows(prefix)
    assert count(rows["execute→viewer"]) > 0, explain(result)


def test_stopped_server_exits_2(locust_venv: None, server_process: ServerProcess) -> None:
    server_process.stop()
    result = run("classroom", server_process, "--duration", "2")
    assert result.returncode == 2, explain(result)
    assert "server not reachable" in result.stderr


def test_bad_key_exits_2(locust_venv: None, server_process: ServerProcess) -> None:
    result = run("platform", server_process, "--duration", "2", key="not-a-key")
    assert result.returncode == 2, explain(result)
    assert "API key was refused" in result.stderr


def test_impossible_threshold_exits_1(
    locust_venv: None, server_process: ServerProcess, tmp_path: Path
) -> None:
    """Also the multi-process path: viewers split over two locust processes still report."""
    prefix = tmp_path / "impossible"
    result = run(
        "classroom", server_process, "--viewers", "4", "--editors", "1", "--duration", "2",
        "--processes", "2", "--min-delivery", "1.5", "--csv", str(prefix), *RELAXED,
    )  # fmt: skip
    assert result.returncode == 1, explain(result)
    assert "FAIL  delivery: 1.00000 ≥ 1.5" in result.stdout, explain(result)
    assert "PASS  error rate" in result.stdout
    rows = ws_rows(prefix)
    assert count(rows["welcome"]) == 5
    assert count(rows["edit→viewer"]) == 4 * (count(rows["ack"]) - 1), explain(result)


def test_server_restart_mid_run_resumes(
    locust_venv: None, server_process: ServerProcess, tmp_path: Path
) -> None:
    """Viewers and editors closed by a server restart resume with `since` and their client id;
    every viewer still gets every op, each close is a reported failure."""
    prefix = tmp_path / "restart"
    cmd = [
        str(RUN), "classroom", "--host", server_process.base_url, "--api-key", server_process.api_key,
        "--viewers", "3", "--editors", "1", "--rate", "4", "--duration", "10", "--csv", str(prefix),
        "--max-error-rate", "1", *RELAXED,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "… measured window 10 s starting in T s; …"
    starts_in = float(first.split("starting in ")[1].split(" s")[0])
    time.sleep(starts_in + 3)
    assert server_process.stop() == 0
    server_process.start()
    out, err = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(cmd, proc.returncode, first + out, err)
    assert result.returncode == 0, explain(result)
    rows = ws_rows(prefix)
    assert count(rows["closed"]) == 4, explain(result)
    # Each of the 4 connections resumed once; attempts while the server was down failed.
    assert count(rows["resume"]) - int(rows["resume"]["Failure Count"]) == 4, explain(result)
    assert "delivery: 1.00000 over 3 viewers" in result.stdout, explain(result)
    assert "0 lost" in result.stdout
    edits = count(rows["ack"]) - 1
    assert count(rows["edit→viewer"]) == 3 * edits, explain(result)


def test_classroom_behind_nginx(locust_venv: None, server_process: ServerProcess, tmp_path: Path) -> None:
    """The scenarios work through the proxy of `agora proxy-config` (HTTP and WebSocket)."""
    prefix = tmp_path / "nginx"
    with running_proxy([server_process.port]) as proxy:
        result = run(
            "classroom", server_process, "--viewers", "3", "--editors", "1", "--rate", "4", "--duration", "2",
            "--csv", str(prefix), *RELAXED, host=proxy.base_url,
        )  # fmt: skip
        access = proxy.access_log()
    assert result.returncode == 0, explain(result)
    rows = ws_rows(prefix)
    assert count(rows["welcome"]) == 4
    assert count(rows["edit→viewer"]) == 3 * (count(rows["ack"]) - 1), explain(result)
    assert access.count('/ws HTTP/1.1" 101') == 4, access  # the sockets really went through nginx


def test_scenarios_type_check(locust_venv: None) -> None:
    """mypy --strict (the project's settings) over the locust files, against .venv-locust where
    locust, gevent and websocket-client live (the project's own mypy run excludes them)."""
    here = ROOT / "loadtest" / "locust"
    venv = Path(os.environ.get("AGORA_LOCUST_VENV", ROOT / ".venv-locust"))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    cmd += ["--python-executable", str(venv / "bin" / "python"), *sorted(p.name for p in here.glob("*.py"))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=here)
    assert result.returncode == 0, result.stdout + result.stderr
