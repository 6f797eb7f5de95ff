"""One notebook's flood must not slow another notebook's editors (the 100 ms p99 target is
measured by loadtest/bench_isolation.py; this test asserts a tenfold bound, and the flood's cap)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import trio

from loadtest.bench_isolation import normal_editor, quantiles
from tests.limits_support import running

ROOT = Path(__file__).resolve().parent.parent
FLOOD_SECONDS = 4.0


async def test_a_flood_on_one_notebook_leaves_another_responsive(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers) as api:
            cell = {"id": "c0", "cell_type": "code", "metadata": {}, "outputs": [], "source": ""}
            cell["execution_count"] = None
            tokens = {}
            for nid in ("calm", "flood"):
                nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}
                created = await api.post("/api/v1/notebooks", json={"id": nid, "notebook": nb})
                assert created.status_code == 201, created.text
                body = {"notebook": nid, "user": {"id": nid, "name": nid}, "role": "editor"}
                tokens[nid] = (await api.post("/api/v1/tokens", json=body)).json()["token"]
        command = [
            sys.executable,
            str(ROOT / "loadtest" / "bench_isolation.py"),
            "--flood",
            server.ws_url("flood", tokens["flood"]),
            str(FLOOD_SECONDS),
        ]
        samples: list[float] = []
        async with trio.open_nursery() as nursery:
            run_flood = functools.partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
            flood = await nursery.start(run_flood)
            await trio.sleep(0.5)
            await normal_editor(server, tokens["calm"], FLOOD_SECONDS - 1.5, samples)
            with trio.fail_after(30):
                await flood.wait()
                output = await flood.stdout.receive_some(1 << 16)
        result = orjson.loads(output)
        latency = quantiles(samples)
        assert latency["n"] >= 20, latency
        assert latency["p99"] < 1000, latency  # target 100 ms (bench); before the limits 203-678 ms
        # 4 MiB burst + 1 MiB/s: the flood cannot get much more than 8 MiB through in 4 s
        assert 0 < result["flood_accepted_mib"] < 12, result
