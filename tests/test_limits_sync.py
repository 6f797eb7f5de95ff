"""Per-connection limits of the sync socket on the real server: byte rate, message size, and
close frames that arrive (4413, 4408) instead of a bare TCP close (1006)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import trio

from tests.limits_support import running
from tests.wsclient import SyncClient, close_reason

KiB = 1024


def _setup(api: httpx.Client, nid: str = "nb") -> tuple[str, str]:
    cell = {"id": "c0", "cell_type": "code", "metadata": {}, "outputs": [], "source": ""}
    cell["execution_count"] = None
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
    assert api.post("/api/v1/notebooks", json={"id": nid, "notebook": nb}).status_code == 201
    tokens = []
    for role in ("editor", "viewer"):
        body = {"notebook": nid, "user": {"id": role, "name": role}, "role": role}
        tokens.append(api.post("/api/v1/tokens", json=body).json()["token"])
    return tokens[0], tokens[1]


async def test_an_editor_is_read_at_its_byte_rate(tmp_path: Path) -> None:
    """8 pipelined 60 KiB ops at 64 KiB/s (burst 64 KiB) take >= ~6.5 s to be read; unthrottled
    they commit in well under a second (the bound asserted, 2 s, leaves a tenfold margin)."""
    with running(tmp_path, "--ws-byte-rate", "64KiB", "--ws-byte-burst", "64KiB") as server:
        with httpx.Client(base_url=server.base_url, headers=server.headers) as api:
            editor_tok, _ = _setup(api)
        async with SyncClient.connect(server.ws_url("nb", editor_tok)) as editor:
            welcome = await editor.start()
            started = time.monotonic()
            for seq in range(1, 9):
                op = [{"t": "text", "id": "c0", "ops": ["p" * 60 * KiB]}]
                await editor.send({"type": "op", "seq": seq, "base": welcome["version"], "op": op})
            version = welcome["version"]
            with trio.fail_after(60):
                while version < welcome["version"] + 8:
                    message = await editor.recv()
                    if message["type"] == "ops":
                        version = message["ops"][-1]["v"]
            assert time.monotonic() - started > 2.0


async def test_an_oversized_message_closes_with_4413(tmp_path: Path) -> None:
    with running(tmp_path, "--ws-max-message", "4KiB") as server:
        with httpx.Client(base_url=server.base_url, headers=server.headers) as api:
            editor_tok, _ = _setup(api)
        async with SyncClient.connect(server.ws_url("nb", editor_tok)) as editor:
            await editor.start()
            op = [{"t": "text", "id": "c0", "ops": ["q" * 5 * KiB]}]
            await editor.send({"type": "op", "seq": 1, "base": 0, "op": op})
            assert await close_reason(editor) == 4413


def _frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete unmasked server frames in `data` as (opcode, payload), and the rest."""
    out = []
    while len(data) >= 2:
        length, header = data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            length, header = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            if len(data) < 10:
                break
            length, header = int.from_bytes(data[2:10], "big"), 10
        if len(data) < header + length:
            break
        out.append((data[0] & 0x0F, data[header : header + length]))
        data = data[header + length :]
    return out, data


def _slow_viewer(port: int, target: str, result: dict[str, Any], stop: threading.Event) -> None:
    """A viewer reading 16 KiB every 20 ms (~800 KiB/s) through a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KiB)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    result["welcomed"] = threading.Event()
    try:
        while not stop.is_set():
            data = sock.recv(16 * KiB)
            if not data:
                result["eof"] = True
                break
            buf += data
            frames, buf = _frames(buf)
            for opcode, payload in frames:
                if opcode == 0x8:
                    result["close"] = int.from_bytes(payload[:2], "big")
                    return
                if opcode == 0x1 and b'"welcome"' in payload[:20]:
                    result["welcomed"].set()
            time.sleep(0.02)
    except OSError as exc:
        result["error"] = repr(exc)
    finally:
        sock.close()


async def test_a_slow_viewer_cut_mid_frame_still_gets_its_4408(tmp_path: Path) -> None:
    """The server cuts a lagging viewer while a frame is half-written: it finishes that frame
    and sends the close frame (before, the close was skipped and the viewer saw a bare close)."""
    with running(tmp_path, "--ws-byte-rate", "64MiB", "--ws-byte-burst", "64MiB") as server:
        with httpx.Client(base_url=server.base_url, headers=server.headers) as api:
            editor_tok, viewer_tok = _setup(api)
        url = urlsplit(server.ws_url("nb", viewer_tok))
        result: dict[str, Any] = {}
        stop = threading.Event()
        args = (server.port, f"{url.path}?{url.query}", result, stop)
        thread = threading.Thread(target=_slow_viewer, args=args)
        thread.start()
        try:
            async with SyncClient.connect(server.ws_url("nb", editor_tok)) as editor:
                welcome = await editor.start()
                with trio.fail_after(60):
                    seq = 0
                    while thread.is_alive() and seq < 400:  # ~2.5 MB/s of 100 KiB ops
                        seq += 1
                        text = orjson.dumps(seq).decode() + "r" * 100 * KiB
                        op = [{"t": "text", "id": "c0", "ops": [text]}]
                        await editor.send({"type": "op", "seq": seq, "base": welcome["version"], "op": op})
                        await trio.sleep(0.04)
        finally:
            stop.set()
            await trio.to_thread.run_sync(thread.join)
        assert result.get("close") == 4408, result
