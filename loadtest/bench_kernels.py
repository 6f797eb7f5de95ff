"""Kernel benchmark: a cell floods flushed prints while a class watches and editors type.

    .venv/bin/python -m loadtest.bench_kernels [--viewers 500] [--editors 30] [--duration 30]
                                               [--notebooks 16] [--multi-duration 15]

Scenario "flood": one real server, one notebook; --viewers raw viewers and --editors typing
editors (plus probe viewers that timestamp every op, `loadtest.editors`) connect; then one code
cell runs `print(i, flush=True)` in a loop for --duration seconds while the editors type.
Measured over that window: edit→viewer latency (p50/p99, editors' ops at the probes), the trio
loop's lag (p99 from `agora_loop_lag_seconds`), frames/s and bytes/s reaching each viewer,
server and kernel CPU, iopub messages decoded, output bytes committed and dropped.

Scenario "many": --notebooks notebooks each run the same flood at once for --multi-duration
seconds (no viewers): loop lag p99 and server CPU.

Scenario "steps" (in-process, no sockets to viewers): the engine and the kernel service run in
this process on an in-memory store while one cell floods for --duration seconds; a trio
instrument records the CPU time (`time.thread_time`, so not inflated when the OS preempts the
process) of every task step. The longest step is the longest the loop was held by our code,
whatever else runs on the machine; also CPU per iopub message.

Prints one JSON line and a table; writes the JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from loadtest.bench import (
    RESULTS,
    CpuWindow,
    Run,
    ViewerGroup,
    cpu_seconds,
    delta,
    lecture_notebook,
    metrics,
    mint_tokens,
)

FLOOD = (
    "import time\nt0 = time.time()\ni = 0\n"
    "while time.time() - t0 < {seconds}:\n    print(i, flush=True)\n    i += 1"
)


def kernel_pids(server_pid: int) -> list[int]:
    """The server's child processes that are kernels."""
    pids = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(int(pid))
            except FileNotFoundError:
                pass
    return pids


def lag_p99_ms(m1: dict[str, float], m0: dict[str, float]) -> float | None:
    """p99 of the loop-lag histogram between two /metrics samples (the bucket bound it falls in)."""
    count = delta(m1, m0, "agora_loop_lag_seconds_count")
    buckets = sorted(
        (float(m.group(1)), delta(m1, m0, key))
        for key in m1
        if (m := re.match(r'agora_loop_lag_seconds_bucket\{le="([^"]+)"\}', key))
    )
    for le, cum in buckets:
        if count and cum >= 0.99 * count:
            return round(1000 * le, 1) if le != float("inf") else float("inf")
    return None


def wait_states(http: httpx.Client, notebook: str, cells: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http.get(f"/api/v1/notebooks/{notebook}/kernel").json()
        if status["state"] == "idle" and not status["queue"]:
            return
        time.sleep(0.2)


def scenario_flood(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    run = Run("kernels-flood", args)
    res: dict[str, Any] = {"scenario": "flood", "viewers": args.viewers, "editors": args.editors}
    try:
        nb_id = "lecture"
        notebook = lecture_notebook(args.editors, 4)
        notebook["cells"].append(
            {
                "id": "flood",
                "cell_type": "code",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": FLOOD.format(seconds=args.duration),
            }
        )
        assert run.http.post("/api/v1/notebooks", json={"id": nb_id, "notebook": notebook}).status_code == 201
        r = run.http.post(f"/api/v1/notebooks/{nb_id}/kernel", json={"action": "start"})
        assert r.status_code == 200, r.text
        (kpid,) = kernel_pids(run.spid)
        viewers = ViewerGroup(
            run, nb_id, mint_tokens(run.http, nb_id, "viewer", "student", args.viewers), args.viewer_procs, 1
        )
        editors = run.child(
            "editors",
            {
                "notebook": nb_id,
                "probe_tokens": mint_tokens(run.http, nb_id, "viewer", "probe", args.probes),
                "editor_tokens": mint_tokens(run.http, nb_id, "editor", "editor", args.editors),
                "own_cells": [f"own{i}" for i in range(args.editors)],
                "shared_cells": [f"shared{i}" for i in range(4)],
                "seed": 1,
            },
        )
        editors.send("connect")
        editors.wait("ready", 60)
        viewers.send("connect", concurrency=64, timeout=90)
        ready = viewers.wait("ready", 120)
        say(f"[flood] {ready['welcomed']}/{args.viewers} viewers and {args.editors} editors connected")
        time.sleep(1.0)
        m0 = metrics(run.http)
        viewers.send("stats")
        s0 = viewers.wait("stats", 30)
        k0 = cpu_seconds(kpid)
        cpu = CpuWindow({"server": run.spid})
        cpu.start()
        t_go = time.monotonic() + 0.2
        editors.send("go", duration=args.duration, rate=args.rate, t_go=t_go, presence=0.5)
        run.http.post(f"/api/v1/notebooks/{nb_id}/execute", json={"cells": ["flood"]})
        say(f"[flood] flooding and editing for {args.duration:.0f} s ...")
        time.sleep(max(0.0, t_go + args.duration - time.monotonic()))
        window = cpu.stop()
        kernel_cpu = cpu_seconds(kpid) - k0
        m1 = metrics(run.http)
        viewers.send("stats")
        s1 = viewers.wait("stats", 30)
        editors.wait("done", 60)
        wait_states(run.http, nb_id, ["flood"], 30)
        head = int(run.http.get(f"/api/v1/notebooks/{nb_id}").json()["version"])
        content = run.http.get(f"/api/v1/notebooks/{nb_id}/content").json()
        cells = [
            {"id": c["id"], "cell_type": c["cell_type"], "source": "".join(c["source"])}
            for c in content["cells"]
        ]
        editors.send("check", head=head, cells=cells, timeout=15)
        check = editors.wait("check", 60)
        wall = window["wall_s"]
        n = max(1, args.viewers)
        res.update(
            {
                "duration_s": wall,
                "edit_to_viewer_ms": check["latency_wire_ms"],
                "loop_lag_p99_ms": lag_p99_ms(m1, m0),
                "viewer_frames_per_s": round((s1["frames"] - s0["frames"]) / n / wall, 2),
                "viewer_bytes_per_s": round((s1["bytes"] - s0["bytes"]) / n / wall, 1),
                "server_cpu_pct": window["server_cpu_pct"],
                "kernel_cpu_pct": round(100 * kernel_cpu / wall, 1),
                "machine_busy_pct": window["machine_busy_pct"],
                "iopub_messages_per_s": round(delta(m1, m0, "agora_kernel_iopub_messages_total") / wall, 1),
                "output_bytes_committed": int(
                    delta(m1, m0, 'agora_kernel_output_bytes_total{fate="committed"}')
                ),
                "output_bytes_dropped": int(delta(m1, m0, 'agora_kernel_output_bytes_total{fate="dropped"}')),
                "ops_per_s": round(delta(m1, m0, "agora_ops_committed_total") / wall, 1),
                "converged": check["probes_converged"] == check["probes"]
                and check["editors_converged"] == check["editors"],
            }
        )
    finally:
        res.update(run.close())
    return res


def scenario_many(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    run = Run("kernels-many", args)
    res: dict[str, Any] = {"scenario": "many", "notebooks": args.notebooks}
    try:
        ids = [f"nb{i}" for i in range(args.notebooks)]
        for nid in ids:
            nb = lecture_notebook(1, 0)
            nb["cells"].append(
                {
                    "id": "flood",
                    "cell_type": "code",
                    "metadata": {},
                    "outputs": [],
                    "execution_count": None,
                    # long enough to outlast starting all of them; interrupted after the window
                    "source": FLOOD.format(seconds=args.multi_duration + 60),
                }
            )
            assert run.http.post("/api/v1/notebooks", json={"id": nid, "notebook": nb}).status_code == 201
            assert (
                run.http.post(f"/api/v1/notebooks/{nid}/kernel", json={"action": "start"}).status_code == 200
            )
        say(f"[many] {len(kernel_pids(run.spid))} kernels up; flooding for {args.multi_duration:.0f} s ...")
        for nid in ids:
            run.http.post(f"/api/v1/notebooks/{nid}/execute", json={"cells": ["flood"]})
        m0 = metrics(run.http)  # the window opens once every kernel floods
        cpu = CpuWindow({"server": run.spid})
        cpu.start()
        time.sleep(args.multi_duration)
        window = cpu.stop()
        m1 = metrics(run.http)
        for nid in ids:
            run.http.post(f"/api/v1/notebooks/{nid}/kernel", json={"action": "interrupt"})
        wall = window["wall_s"]
        res.update(
            {
                "duration_s": wall,
                "loop_lag_p99_ms": lag_p99_ms(m1, m0),
                "server_cpu_pct": window["server_cpu_pct"],
                "machine_busy_pct": window["machine_busy_pct"],
                "iopub_messages_per_s": round(delta(m1, m0, "agora_kernel_iopub_messages_total") / wall, 1),
                "ops_per_s": round(delta(m1, m0, "agora_ops_committed_total") / wall, 1),
            }
        )
        for nid in ids:
            wait_states(run.http, nid, ["flood"], 30)
    finally:
        res.update(run.close())
    return res


class _StepTimer(trio.abc.Instrument):
    """CPU time of every trio task step (the time a task holds the loop)."""

    def __init__(self) -> None:
        self.started = time.thread_time()
        self.longest = (0.0, "")
        self.over_5ms = 0
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        spent = time.thread_time() - self.started
        self.steps += 1
        self.over_5ms += spent > 0.005
        if spent > self.longest[0]:
            self.longest = (spent, task.name)


async def _steps(seconds: float) -> dict[str, Any]:
    from engine.engine import Engine
    from engine.ipynb import import_notebook
    from engine.kernels import KernelService, KernelSettings, RoomSink
    from engine.metrics import REGISTRY
    from engine.storage.memory import MemoryStorage
    from tests.kernelkit import code_notebook

    engine = Engine(MemoryStorage())
    with tempfile.TemporaryDirectory(prefix="agora-bench-steps-") as tmp:
        kernels = KernelService(KernelSettings(data_dir=Path(tmp)), lambda nid: RoomSink(engine, nid))
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await nursery.start(kernels.run)
            nb = import_notebook(code_notebook({"flood": FLOOD.format(seconds=seconds)}))
            await engine.create_notebook("nb", None, nb)
            await kernels.control("nb", "start")
            before = REGISTRY.get_sample_value("agora_kernel_iopub_messages_total") or 0.0
            timer = _StepTimer()
            cpu0 = time.thread_time()
            trio.lowlevel.add_instrument(timer)
            run = await kernels.execute("nb", None, None)
            await run.done.wait()
            trio.lowlevel.remove_instrument(timer)
            cpu = time.thread_time() - cpu0
            messages = (REGISTRY.get_sample_value("agora_kernel_iopub_messages_total") or 0.0) - before
            await kernels.shutdown_all()
            nursery.cancel_scope.cancel()
    return {
        "scenario": "steps",
        "iopub_messages": int(messages),
        "loop_cpu_s": round(cpu, 3),
        "cpu_us_per_iopub_message": round(1e6 * cpu / messages, 1) if messages else None,
        "task_steps": timer.steps,
        "steps_over_5ms": timer.over_5ms,
        "longest_step_ms": round(1000 * timer.longest[0], 2),
        "longest_step_task": timer.longest[1],
    }


def scenario_steps(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    say(f"[steps] one flooding kernel in-process for {args.duration:.0f} s ...")
    return trio.run(_steps, args.duration)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=500)
    p.add_argument("--editors", type=int, default=30)
    p.add_argument("--probes", type=int, default=10)
    p.add_argument("--rate", type=float, default=2.0, help="ops per second per editor")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of flood with editing")
    p.add_argument("--notebooks", type=int, default=16, help="kernels flooding at once in 'many'")
    p.add_argument("--multi-duration", type=float, default=15.0)
    p.add_argument("--scenario", choices=("all", "flood", "many", "steps"), default="all")
    p.add_argument("--viewer-procs", type=int, default=2)
    p.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json-only", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)

    def say(text: str) -> None:
        if not args.json_only:
            print(text, file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "bench": "kernels",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if args.scenario in ("all", "steps"):
        result["steps"] = scenario_steps(args, say)
    if args.scenario in ("all", "flood"):
        result["flood"] = scenario_flood(args, say)
    if args.scenario in ("all", "many"):
        result["many"] = scenario_many(args, say)
    line = json.dumps(result)
    print(line)
    (RESULTS / f"kernels-{result['date'].replace(':', '')}.json").write_text(line + "\n")
    if not args.json_only:
        for name in ("steps", "flood", "many"):
            for key, value in result.get(name, {}).items():
                print(f"{name:6} {key:26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
