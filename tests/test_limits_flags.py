"""Every limit of contract §1/§8 this server owns is a flag with an AGORA_* variable, listed with
its default by `agora serve --help` and documented in docs/operations.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.limits_support import connect, error_code, read_response, running

ROOT = Path(__file__).resolve().parent.parent
LIMIT_FLAGS = {
    "--max-connections": ("AGORA_MAX_CONNECTIONS", "10000"),
    "--ws-max-message": ("AGORA_WS_MAX_MESSAGE", "1MiB"),
    "--http-max-body": ("AGORA_HTTP_MAX_BODY", "32MiB"),
    "--http-body-timeout": ("AGORA_HTTP_BODY_TIMEOUT", "15"),
    "--notebook-max-bytes": ("AGORA_NOTEBOOK_MAX_BYTES", "32MiB"),
    "--ws-byte-rate": ("AGORA_WS_BYTE_RATE", "1MiB"),
    "--ws-byte-burst": ("AGORA_WS_BYTE_BURST", "4MiB"),
    "--ws-msg-rate": ("AGORA_WS_MSG_RATE", "200"),
    "--ws-msg-burst": ("AGORA_WS_MSG_BURST", "400"),
    "--http-rate": ("AGORA_HTTP_RATE", "100"),
    "--http-burst": ("AGORA_HTTP_BURST", "1000"),
}


def test_help_lists_every_limit_with_its_variable_and_default() -> None:
    command = [sys.executable, str(ROOT / "server.py"), "serve", "--help"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    text = " ".join(out.split())  # argparse wraps lines
    for flag, (env, default) in LIMIT_FLAGS.items():
        assert flag in text, flag
        assert f"env {env}, default {default})" in text, (flag, env, default)


def test_operations_doc_lists_every_limit() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for flag, (env, _) in LIMIT_FLAGS.items():
        assert f"`{flag}`" in doc and f"`{env}`" in doc, flag


@pytest.mark.parametrize("value", ["0", "-1", "lots", "1.5.2MiB"])
def test_a_bad_size_is_refused_at_the_command_line(value: str) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "serve", "--notebook-max-bytes", value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "--notebook-max-bytes" in run.stderr and "not a size" in run.stderr


def test_a_limit_set_by_environment_variable_applies(tmp_path: Path) -> None:
    with running(tmp_path, env={"AGORA_HTTP_MAX_BODY": "2KiB"}) as server, connect(server.port) as sock:
        sock.sendall(
            b"POST /api/v1/notebooks HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n"
            + f"Authorization: Bearer {server.api_key}\r\n\r\n".encode()
        )
        status, _, body = read_response(sock)
        assert status == 413 and error_code(body) == "payload_too_large"
