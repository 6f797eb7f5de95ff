"""A room's disk fails under the real server with the file store: clients get 1011, nothing
unsaved is acknowledged, and what was acknowledged is still there afterwards.

The server runs in this process (`server.serve`, the same listener, HTTP app and sync endpoint
as `agora serve`) so that its file store can be given a `Disk` whose fsync fails on demand:
real files, real sockets, no mocks.
"""

from __future__ import annotations

import errno
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed

from engine.storage.disk import Disk
from server import Settings, serve
from tests.test_sync import head_sources, make_notebook, token
from tests.wsclient import SyncClient

API_KEY = "disk-failure-test-key"


class FailingDisk(Disk):
    """The real disk, except that every fsync fails with ENOSPC while `failing` is set."""

    failing = False

    def fsync(self, fd: int) -> None:
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        super().fsync(fd)


async def frames_until_closed(client: SyncClient) -> tuple[list[dict[str, object]], int | None]:
    """Every message until the server closes the socket, and the close code."""
    seen: list[dict[str, object]] = []
    with trio.fail_after(15):
        try:
            while True:
                seen.append(await client.recv(15, presence=True))
        except ConnectionClosed as exc:
            return seen, exc.reason.code if exc.reason else None


async def test_disk_failure_closes_with_1011_and_acknowledges_nothing(tmp_path: Path) -> None:
    disk = FailingDisk()
    settings = Settings(
        host="127.0.0.1", port=0, data_dir=tmp_path / "data", api_keys=[API_KEY], secret="x" * 32
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve(settings, disk=disk, task_status=task_status))
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            await make_notebook(http, "nb", cells=1)
            ws = f"ws://127.0.0.1:{port}/api/v1/notebooks/nb/ws?token="
            async with (
                SyncClient.connect(ws + await token(http, "nb", user="ed")) as editor,
                SyncClient.connect(ws + await token(http, "nb", role="viewer", user="vi")) as viewer,
            ):
                await editor.start()
                await viewer.start()
                await editor.submit([{"t": "text", "id": "s0", "ops": ["saved "]}])
                await editor.sync_until(1)
                await viewer.sync_until(1)
                disk.failing = True
                await editor.send(
                    {"type": "op", "seq": 2, "base": 1, "op": [{"t": "text", "id": "s0", "ops": ["lost "]}]}
                )
                for client in (editor, viewer):
                    seen, code = await frames_until_closed(client)
                    assert code == 1011
                    assert {"type": "error", "code": "storage_failed"}.items() <= seen[-1].items(), seen
                    assert not any(m["type"] in ("ops", "ack") for m in seen), f"acknowledged: {seen}"
            disk.failing = False
            assert (await head_sources(http, "nb"))["s0"] == "saved cell 0"
            assert (await http.get("/api/v1/notebooks/nb")).json()["version"] == 1
        nursery.cancel_scope.cancel()
