"""Benchmark of the file storage: recovery time of a 100k-op notebook and group-commit latency.

    .venv/bin/python loadtest/bench_recovery.py [--ops 100000] [--batch 10] [--dir PATH]

Builds a notebook the way a room does (apply each op, append a batch, snapshot when due with
the default `snapshot_every=1000`), then measures `FileStorage.open` (newest snapshot + log
tail), the same with the snapshots moved aside (full replay from version 0), and the latency
of `append` for batches of 1, 10 and 100 ops. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.ot.components import apply_op
from engine.ot.model import Notebook
from engine.records import CommittedOp
from engine.storage.base import NotebookInfo
from engine.storage.files import FileStorage


def make_op(v: int, rng: random.Random, lengths: list[int]) -> CommittedOp:
    """Small text ops on a few cells (the first ops insert the cells)."""
    cells = len(lengths)
    if v <= cells:
        op: list[dict[str, Any]] = [
            {"t": "cell_insert", "id": f"c{v}", "pos": f"p{v}", "cell": {"cell_type": "code", "source": ""}}
        ]
    else:
        i = rng.randrange(cells)
        if lengths[i] > 200 and rng.random() < 0.3:
            op = [{"t": "text", "id": f"c{i + 1}", "ops": [rng.randrange(lengths[i] - 3), {"d": 3}]}]
            lengths[i] -= 3
        else:
            op = [{"t": "text", "id": f"c{i + 1}", "ops": [rng.randrange(lengths[i] + 1), "x"]}]
            lengths[i] += 1
    return CommittedOp(
        v=v, client=f"client{v % 7}", seq=v, user=f"user{v % 7}", time=1_700_000_000_000 + v, op=op
    )


async def build(storage: FileStorage, notebook_id: str, n: int, batch: int) -> tuple[float, int]:
    await storage.create(NotebookInfo(id=notebook_id, name="bench", created=0, updated=0), Notebook())
    store, _ = await storage.open(notebook_id, 1000)
    rng = random.Random(1)
    lengths = [0] * 5
    nb = Notebook()
    append_seconds = 0.0
    snapshots = 0
    v = 0
    while v < n:
        ops = [make_op(v + k + 1, rng, lengths) for k in range(min(batch, n - v))]
        for op in ops:
            nb = apply_op(nb, op.op, op.v)
        t0 = time.perf_counter()
        await store.append(ops)
        append_seconds += time.perf_counter() - t0
        v = ops[-1].v
        if store.snapshot_due(v):
            await store.write_snapshot(nb, v)
            snapshots += 1
    await store.close()
    return append_seconds, snapshots


async def append_latency(storage: FileStorage, size: int, rounds: int) -> dict[str, float]:
    nid = f"lat{size}"
    await storage.create(NotebookInfo(id=nid, name="lat", created=0, updated=0), Notebook())
    store, _ = await storage.open(nid, 10)
    rng = random.Random(2)
    lengths = [0] * 5
    v = 0
    samples: list[float] = []
    for _ in range(rounds):
        ops = [make_op(v + k + 1, rng, lengths) for k in range(size)]
        t0 = time.perf_counter()
        await store.append(ops)
        samples.append(time.perf_counter() - t0)
        v += size
    await store.close()
    samples.sort()
    med = statistics.median(samples)
    return {
        "median_ms": round(med * 1000, 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 3),
        "per_op_us": round(med / size * 1e6, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10, help="ops per append while building")
    parser.add_argument("--dir", type=Path, default=None, help="data dir (default: a temp dir, removed)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="agora-bench-"))
    try:
        storage = FileStorage(root)
        append_seconds, snapshots = await build(storage, "bench", args.ops, args.batch)
        d = root / "notebooks" / "bench"
        log_bytes = sum(p.stat().st_size for p in (d / "log").iterdir())

        t0 = time.perf_counter()
        store, rec = await FileStorage(root).open("bench", 1000)
        recovery_seconds = time.perf_counter() - t0
        await store.close()
        assert rec.version == args.ops and len(rec.tail) == min(1000, args.ops)

        os.rename(d / "snapshots", d / "snapshots.aside")
        os.mkdir(d / "snapshots")
        t0 = time.perf_counter()
        store, rec2 = await FileStorage(root).open("bench", 1000)
        full_replay_seconds = time.perf_counter() - t0
        await store.close()
        assert rec2.notebook == rec.notebook

        latency = {str(size): await append_latency(storage, size, 300) for size in (1, 10, 100)}
        print(
            orjson.dumps(
                {
                    "ops": args.ops,
                    "append_seconds": round(append_seconds, 3),
                    "recovery_seconds": round(recovery_seconds, 4),
                    "log_bytes": log_bytes,
                    "snapshot_count": snapshots,
                    "build_batch": args.batch,
                    "full_replay_seconds": round(full_replay_seconds, 3),
                    "append_latency": latency,
                }
            ).decode()
        )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    trio.run(main)
