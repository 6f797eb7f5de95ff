"""The end-to-end benchmark: one real server, hundreds of live viewers, tens of typing editors.

    .venv/bin/python -m loadtest.bench [--viewers 500] [--editors 30] [--rate 2] [--duration 60]
                                       [--probes 20] [--fsync|--no-fsync] [--json-only] [--scenario both]

Scenario "live" (a lecture in progress): the server starts on a temp data dir, a notebook with
one cell per editor plus shared cells is created, tokens are minted over HTTP; then two load
processes (each a trio program) connect: `loadtest.viewers` (raw viewers that only count
frames) and `loadtest.editors` (editors that type with client-side OT, and probe viewers that
decode and timestamp every op). Editors type for --duration seconds at --rate ops/s each
(Poisson). Measured over that window: latency (probe receive - editor send, every op at every
probe), server CPU and RSS from /proc, load-generator CPU, frames and fsyncs from /metrics
deltas; afterwards, convergence of every probe and editor replica and of every raw viewer.

Scenario "class": --viewers viewers join a realistic 303-cell notebook within 5 s while a
teacher types; time to welcome and server CPU during the join storm.

Prints one JSON line, then a table; writes the JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

from loadtest.ctl import ROOT, Child
from tests.server_process import ServerProcess

RESULTS = ROOT / "bench-results"
CLASS_NOTEBOOK = ROOT / "tests" / "data" / "notebooks" / "handson_ml3_tools_pandas_303cells.ipynb"
TICK = os.sysconf("SC_CLK_TCK")


# ---- /proc --------------------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, in seconds (fields 14 and 15 of proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuWindow:
    """CPU % of one core for a set of processes (and the machine) between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_times(p) for k, p in self.pids.items()}
        self.m0 = machine_busy()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        out: dict[str, Any] = {"wall_s": round(wall, 3)}
        for k, p in self.pids.items():
            user, system = cpu_times(p)
            du, ds = user - self.c0[k][0], system - self.c0[k][1]
            out[f"{k}_cpu_pct"] = round(100 * (du + ds) / wall, 1)
            out[f"{k}_user_sys_pct"] = [round(100 * du / wall, 1), round(100 * ds / wall, 1)]
        m1 = machine_busy()
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        out["machine_busy_pct"] = round(100 * busy / total, 1) if total else None  # of all cores
        return out


# ---- /metrics -----------------------------------------------------------------------------------

_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metrics(http: httpx.Client) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        m = _METRIC.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def delta(m1: dict[str, float], m0: dict[str, float], key: str) -> float:
    return m1.get(key, 0.0) - m0.get(key, 0.0)


def fsync_stats(m1: dict[str, float], m0: dict[str, float], wall: float) -> dict[str, Any]:
    count = delta(m1, m0, "agora_fsync_seconds_count")
    total = delta(m1, m0, "agora_fsync_seconds_sum")
    buckets = []
    for key in m1:
        m = re.match(r'agora_fsync_seconds_bucket\{le="([^"]+)"\}', key)
        if m:
            buckets.append((float(m.group(1)), delta(m1, m0, key)))
    buckets.sort()
    p99 = None
    for le, cum in buckets:
        if count and cum >= 0.99 * count:
            p99 = le
            break
    return {
        "fsyncs": int(count),
        "fsyncs_per_s": round(count / wall, 1) if wall else None,
        "fsync_mean_ms": round(1000 * total / count, 3) if count else None,
        "fsync_p99_le_ms": round(1000 * p99, 3) if p99 is not None and p99 != float("inf") else p99,
    }


# ---- setup --------------------------------------------------------------------------------------


def mint_tokens(http: httpx.Client, notebook: str, role: str, prefix: str, n: int) -> list[str]:
    def one(i: int) -> str:
        r = http.post(
            "/api/v1/tokens",
            json={
                "notebook": notebook,
                "user": {"id": f"{prefix}{i}", "name": f"{prefix.title()} {i}"},
                "role": role,
                "ttl": 7200,
            },
        )
        if r.status_code != 201:
            raise RuntimeError(f"token mint failed: {r.status_code} {r.text}")
        return str(r.json()["token"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def lecture_notebook(editors: int, shared: int) -> dict[str, Any]:
    cells: list[dict[str, Any]] = [
        {
            "id": "intro",
            "cell_type": "markdown",
            "metadata": {},
            "source": "# Live session\nWatch and type along.",
        }
    ]
    for i in range(shared):
        cells.append(
            {
                "id": f"shared{i}",
                "cell_type": "code",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": f"# shared cell {i}\nresult = {i}\n",
            }
        )
    for i in range(editors):
        cells.append(
            {
                "id": f"own{i}",
                "cell_type": "code",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": f"# student {i}\nx_{i} = {i}\nprint(x_{i})\n",
            }
        )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    }


def head_state(http: httpx.Client, notebook: str) -> tuple[int, list[dict[str, str]], int]:
    summary = http.get(f"/api/v1/notebooks/{notebook}").json()
    r = http.get(f"/api/v1/notebooks/{notebook}/content")
    cells = [
        {
            "id": c["id"],
            "cell_type": c["cell_type"],
            "source": "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
        }
        for c in r.json()["cells"]
    ]
    return int(summary["version"]), cells, int(r.headers["X-Agora-Version"])


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps(config))
    return path


def log_problems(log: str) -> list[str]:
    """Lines of the server log that report something wrong (tracebacks, errors, warnings)."""
    bad = [
        line for line in log.splitlines() if re.search(r"Traceback|ERROR|WARNING|CRITICAL|Exception", line)
    ]
    return bad[:20]


class Run:
    """One scenario's server, load processes and bookkeeping; always cleaned up by `close`."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=f"agora-bench-{name}-"))
        (self.tmp / "data").mkdir()
        extra = [] if args.fsync else ["--unsafe-no-fsync"]
        self.server = ServerProcess(data_dir=self.tmp / "data", extra_args=extra)
        self.children: list[Child] = []
        self.server.start()
        assert self.server.proc is not None
        self.spid = self.server.proc.pid
        self.http = httpx.Client(base_url=self.server.base_url, headers=self.server.headers, timeout=60)

    def child(self, module: str, config: dict[str, Any], label: str | None = None) -> Child:
        label = label or module
        path = write_config(self.tmp / f"{label}.json", {"port": self.server.port, **config})
        c = Child(module, path, RESULTS / f"{self.name}-{label}.stderr.log")
        self.children.append(c)
        c.wait("started", 30)
        return c

    def close(self) -> dict[str, Any]:
        for c in self.children:
            c.stop()
        self.http.close()
        code: int | str | None = None
        try:
            code = self.server.stop()
        except Exception as exc:
            code = f"stop failed: {exc}"
        log = self.server.log()
        (RESULTS / f"{self.name}-server.log").write_text(log)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return {"server_exit_code": code, "server_log_problems": log_problems(log)}


class ViewerGroup:
    """The raw viewers, split over `n` processes; their events are merged into one."""

    SUMS = (
        "viewers",
        "live",
        "failed",
        "disconnected",
        "welcomed",
        "frames",
        "bytes",
        "saw_head",
        "behind",
        "ahead",
    )

    def __init__(self, run: Run, notebook: str, tokens: list[str], n: int, seed: int) -> None:
        n = max(1, min(n, len(tokens) or 1))
        chunks = [tokens[i::n] for i in range(n)]
        self.children = [
            run.child("viewers", {"notebook": notebook, "tokens": chunk, "seed": seed + i}, f"viewers{i}")
            for i, chunk in enumerate(chunks)
        ]

    @property
    def pids(self) -> dict[str, int]:
        return {f"viewers_proc{i}": c.pid for i, c in enumerate(self.children)}

    def send(self, cmd: str, **fields: Any) -> None:
        for c in self.children:
            c.send(cmd, **fields)

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        parts = [c.wait(event, timeout) for c in self.children]
        out: dict[str, Any] = {k: sum(p.get(k) or 0 for p in parts) for k in self.SUMS}
        for key in ("close_codes", "errors"):
            merged: dict[str, int] = {}
            for p in parts:
                for k, v in p.get(key, {}).items():
                    merged[k] = merged.get(k, 0) + v
            out[key] = merged
        welcome: list[float] = sorted(float(x) for p in parts for x in p.get("welcome_list", []))
        if welcome:

            def q(f: float) -> float:
                return welcome[min(len(welcome) - 1, max(0, int(-(-f * len(welcome) // 1)) - 1))]

            out["welcome_ms"] = {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": welcome[-1]}
        else:
            out["welcome_ms"] = parts[0].get("welcome_ms")
        return out


def cpu_summary(window: dict[str, Any]) -> dict[str, Any]:
    """Load-generator CPU: each process and the total, % of one core."""
    procs = {
        k[: -len("_cpu_pct")]: v
        for k, v in window.items()
        if k.endswith("_cpu_pct") and k.startswith(("viewers_proc", "editors_proc"))
    }
    return {**procs, "total": round(sum(procs.values()), 1)}


def pct(x: float, y: float) -> float | None:
    return round(100 * x / y, 2) if y else None


# ---- scenario 1: a live lecture -----------------------------------------------------------------


def scenario_live(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    run = Run("live", args)
    res: dict[str, Any] = {
        "scenario": "live",
        "viewers": args.viewers,
        "editors": args.editors,
        "probes": args.probes,
        "rate_per_editor": args.rate,
        "duration_s": args.duration,
        "fsync_enabled": args.fsync,
        "presence_prob": args.presence,
    }
    try:
        shared = 4
        nb_id = "lecture"
        r = run.http.post(
            "/api/v1/notebooks", json={"id": nb_id, "notebook": lecture_notebook(args.editors, shared)}
        )
        assert r.status_code == 201, r.text
        res["cells"] = 1 + shared + args.editors
        t = time.monotonic()
        viewer_tokens = mint_tokens(run.http, nb_id, "viewer", "student", args.viewers)
        probe_tokens = mint_tokens(run.http, nb_id, "viewer", "probe", args.probes)
        editor_tokens = mint_tokens(run.http, nb_id, "editor", "editor", args.editors)
        say(
            f"[live] minted {len(viewer_tokens) + len(probe_tokens) + len(editor_tokens)} tokens "
            f"in {time.monotonic() - t:.1f} s"
        )
        run.http.get(f"/api/v1/notebooks/{nb_id}/content")  # opens the room
        time.sleep(0.5)
        res["rss_before_kib"] = rss_kib(run.spid)

        viewers = ViewerGroup(run, nb_id, viewer_tokens, args.viewer_procs, args.seed)
        editors = run.child(
            "editors",
            {
                "notebook": nb_id,
                "probe_tokens": probe_tokens,
                "editor_tokens": editor_tokens,
                "own_cells": [f"own{i}" for i in range(args.editors)],
                "shared_cells": [f"shared{i}" for i in range(shared)],
                "seed": args.seed,
            },
        )
        cpu = CpuWindow({"server": run.spid, **viewers.pids, "editors_proc": editors.pid})
        cpu.start()
        editors.send("connect")
        ready_e = editors.wait("ready", 60)
        viewers.send("connect", concurrency=64, timeout=90)
        ready_v = viewers.wait("ready", 120)
        res["connect"] = {
            **cpu.stop(),
            "editors_probes_live": ready_e["live"],
            "failed": ready_e["failed"],
            "viewers_welcomed": ready_v["welcomed"],
            "viewers_failed": ready_v["failed"],
            "viewer_errors": ready_v["errors"],
            "welcome_ms": ready_v["welcome_ms"],
        }
        say(
            f"[live] connected {ready_v['welcomed']}/{args.viewers} viewers, {ready_e['live']} editors+probes"
        )
        time.sleep(2.0)
        connections = args.viewers + args.editors + args.probes
        res["rss_connected_kib"] = rss_kib(run.spid)
        res["rss_per_connection_kib"] = round(
            (res["rss_connected_kib"] - res["rss_before_kib"]) / connections, 2
        )

        m0 = metrics(run.http)
        viewers.send("stats")
        s0 = viewers.wait("stats", 30)
        t_go = time.monotonic() + 0.2
        cpu.start()
        editors.send("go", duration=args.duration, rate=args.rate, t_go=t_go, presence=args.presence)
        say(f"[live] editing for {args.duration:.0f} s ...")
        timeline = []  # (seconds into the window, server RSS KiB), every 5 s
        while (left := t_go + args.duration - time.monotonic()) > 0:
            time.sleep(min(5.0, left))
            timeline.append((round(time.monotonic() - t_go, 1), rss_kib(run.spid)))
        window = cpu.stop()
        res["rss_timeline_kib"] = timeline
        m1 = metrics(run.http)
        viewers.send("stats")
        s1 = viewers.wait("stats", 30)
        done = editors.wait("done", 60)
        wall = window["wall_s"]
        res["window"] = window
        res["server_cpu_pct"] = window["server_cpu_pct"]
        res["server_user_sys_pct"] = window["server_user_sys_pct"]
        res["loadgen_cpu_pct"] = cpu_summary(window)
        ops = delta(m1, m0, "agora_ops_committed_total")
        frames_sent = delta(m1, m0, "agora_frames_sent_total")
        res["ops_committed"] = int(ops)
        res["ops_per_s"] = round(ops / wall, 1)
        res["broadcast_frames_per_s"] = {
            k: round(delta(m1, m0, f'agora_broadcast_frames_total{{kind="{k}"}}') / wall, 1)
            for k in ("ops", "presence")
        }
        res["frames_sent_per_s"] = round(frames_sent / wall, 1)
        res["frames_per_viewer_per_s"] = round(frames_sent / connections / wall, 2)
        res["raw_viewer_frames_per_viewer_per_s"] = round(
            (s1["frames"] - s0["frames"]) / max(1, args.viewers) / wall, 2
        )
        res["raw_viewer_bytes_per_viewer_per_s"] = round(
            (s1["bytes"] - s0["bytes"]) / max(1, args.viewers) / wall, 1
        )
        res["rejects_total"] = int(
            sum(v - m0.get(k, 0) for k, v in m1.items() if k.startswith("agora_rejects_total"))
        )
        res["slow_consumer_cuts"] = int(delta(m1, m0, "agora_slow_consumer_cuts_total"))
        res["fsync"] = fsync_stats(m1, m0, wall)
        res["editing"] = {k: done[k] for k in ("generated", "acked", "unsettled", "rejects", "kinds")}
        res["editing"]["drain_s"] = round(done["t_drained"] - done["t_stop"], 3)

        time.sleep(0.5)
        head, cells, content_version = head_state(run.http, nb_id)
        res["head_version"] = head
        editors.send("check", head=head, cells=cells, timeout=15)
        check_e = editors.wait("check", 60)
        viewers.send("check", head=head, timeout=15)
        check_v = viewers.wait("check", 60)
        res["latency_ms"] = check_e["latency_wire_ms"]
        res["latency_from_edit_ms"] = check_e["latency_edit_ms"]
        res["editor_ack_ms"] = check_e["ack_ms"]
        res["latency_samples"] = {
            "got": check_e["latency_wire_ms"]["n"],
            "expected": check_e["samples_expected"],
            "unknown": check_e["unknown_entries"],
        }
        res["convergence"] = {
            "head_version": head,
            "content_version": content_version,
            "probes_converged": f"{check_e['probes_converged']}/{check_e['probes']}",
            "editors_converged": f"{check_e['editors_converged']}/{check_e['editors']}",
            "raw_viewers_at_head": f"{check_v['saw_head']}/{check_v['viewers']}",
            "version_gaps": check_e["gaps"],
            "client_errors": check_e["errors"],
        }
        res["converged"] = (
            check_e["probes_converged"] == check_e["probes"]
            and check_e["editors_converged"] == check_e["editors"]
            and check_v["saw_head"] == check_v["viewers"]
            and check_e["gaps"] == 0
        )
        res["disconnected"] = {
            "raw_viewers": check_v["disconnected"],
            "close_codes": check_v["close_codes"],
            "probes_editors": check_e["disconnected"],
        }
        res["viewers_disconnected"] = check_v["disconnected"] + sum(
            1 for d in check_e["disconnected"] if d.startswith("probe")
        )
        res["rss_end_kib"] = rss_kib(run.spid)
        res["rss_end_per_connection_kib"] = round(
            (res["rss_end_kib"] - res["rss_before_kib"]) / connections, 2
        )
        res["connections_gauge"] = {
            k: v for k, v in metrics(run.http).items() if k.startswith("agora_connections")
        }
    finally:
        res.update(run.close())
    return res


# ---- scenario 2: class starts -------------------------------------------------------------------


def scenario_class(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    run = Run("class", args)
    res: dict[str, Any] = {
        "scenario": "class_starts",
        "viewers": args.viewers,
        "spread_s": args.class_spread,
        "notebook": CLASS_NOTEBOOK.name,
        "teacher_rate": args.rate,
        "probes": 2,
    }
    try:
        nb_id = "pandas"
        ipynb = json.loads(CLASS_NOTEBOOK.read_text())
        r = run.http.post("/api/v1/notebooks", json={"id": nb_id, "notebook": ipynb})
        assert r.status_code == 201, r.text
        _, cells, _ = head_state(run.http, nb_id)
        teacher_cell = next(c["id"] for c in cells if c["cell_type"] == "code")
        res["cells"] = len(cells)
        viewer_tokens = mint_tokens(run.http, nb_id, "viewer", "student", args.viewers)
        probe_tokens = mint_tokens(run.http, nb_id, "viewer", "probe", 2)
        editor_tokens = mint_tokens(run.http, nb_id, "editor", "teacher", 1)
        time.sleep(0.5)
        res["rss_before_kib"] = rss_kib(run.spid)
        viewers = ViewerGroup(run, nb_id, viewer_tokens, args.viewer_procs, args.seed)
        editors = run.child(
            "editors",
            {
                "notebook": nb_id,
                "probe_tokens": probe_tokens,
                "editor_tokens": editor_tokens,
                "own_cells": [teacher_cell],
                "shared_cells": [],
                "seed": args.seed,
            },
        )
        editors.send("connect")
        editors.wait("ready", 60)
        teaching = args.class_spread + 10
        editors.send("go", duration=teaching, rate=args.rate, presence=args.presence)
        m0 = metrics(run.http)
        cpu = CpuWindow({"server": run.spid, **viewers.pids, "editors_proc": editors.pid})
        cpu.start()
        say(f"[class] {args.viewers} viewers join within {args.class_spread:.0f} s, teacher typing")
        viewers.send("connect", spread=args.class_spread, timeout=60)
        ready = viewers.wait("ready", 120)
        window = cpu.stop()
        m1 = metrics(run.http)
        res["join_window"] = window
        res["server_cpu_pct"] = window["server_cpu_pct"]
        res["server_user_sys_pct"] = window["server_user_sys_pct"]
        res["loadgen_cpu_pct"] = cpu_summary(window)
        res["welcomed"] = ready["welcomed"]
        res["failed"] = ready["failed"]
        res["errors"] = ready["errors"]
        res["time_to_welcome_ms"] = ready["welcome_ms"]
        res["welcome_bytes_per_viewer"] = round(ready["bytes"] / max(1, ready["welcomed"]))
        res["frames_sent_during_join"] = int(delta(m1, m0, "agora_frames_sent_total"))
        res["fsync"] = fsync_stats(m1, m0, window["wall_s"])
        time.sleep(1.0)
        res["rss_connected_kib"] = rss_kib(run.spid)
        res["rss_per_connection_kib"] = round(
            (res["rss_connected_kib"] - res["rss_before_kib"]) / (args.viewers + 3), 2
        )
        done = editors.wait("done", teaching + 60)
        res["teacher_ops"] = done["acked"]
        time.sleep(0.5)
        head, cells, _ = head_state(run.http, nb_id)
        editors.send("check", head=head, cells=cells, timeout=15)
        check_e = editors.wait("check", 60)
        viewers.send("check", head=head, timeout=15)
        check_v = viewers.wait("check", 60)
        res["latency_ms"] = check_e["latency_wire_ms"]
        res["convergence"] = {
            "head_version": head,
            "probes_converged": f"{check_e['probes_converged']}/{check_e['probes']}",
            "editors_converged": f"{check_e['editors_converged']}/{check_e['editors']}",
            "raw_viewers_at_head": f"{check_v['saw_head']}/{check_v['viewers']}",
            "version_gaps": check_e["gaps"],
            "client_errors": check_e["errors"],
        }
        res["converged"] = (
            check_e["probes_converged"] == check_e["probes"]
            and check_e["editors_converged"] == check_e["editors"]
            and check_v["saw_head"] == check_v["viewers"]
        )
        res["viewers_disconnected"] = check_v["disconnected"]
        res["close_codes"] = check_v["close_codes"]
        res["rss_end_kib"] = rss_kib(run.spid)
    finally:
        res.update(run.close())
    return res


# ---- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    live = result.get("live")
    if live and "latency_ms" in live:
        lat = live["latency_ms"]
        rows += [
            ("live: viewers / editors / probes", f"{live['viewers']} / {live['editors']} / {live['probes']}"),
            (
                "live: latency p50 / p95 / p99 / max (ms)",
                f"{lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']}",
            ),
            ("live: latency from edit p99 (ms)", str(live["latency_from_edit_ms"]["p99"])),
            (
                "live: editor ack p50 / p99 (ms)",
                f"{live['editor_ack_ms']['p50']} / {live['editor_ack_ms']['p99']}",
            ),
            ("live: ops committed (ops/s)", f"{live['ops_committed']} ({live['ops_per_s']})"),
            (
                "live: frames sent/s, per viewer/s",
                f"{live['frames_sent_per_s']}, {live['frames_per_viewer_per_s']}",
            ),
            ("live: server CPU % of one core", str(live["server_cpu_pct"])),
            ("live: server CPU user / sys %", " / ".join(map(str, live["server_user_sys_pct"]))),
            ("live: loadgen CPU % per process", str(live["loadgen_cpu_pct"])),
            (
                "live: RSS before / connected / end (MiB)",
                f"{live['rss_before_kib'] / 1024:.1f} / {live['rss_connected_kib'] / 1024:.1f} / "
                f"{live['rss_end_kib'] / 1024:.1f}",
            ),
            (
                "live: RSS per connection connected / end (KiB)",
                f"{live['rss_per_connection_kib']} / {live['rss_end_per_connection_kib']}",
            ),
            (
                "live: fsyncs/s, fsync p99 <= (ms)",
                f"{live['fsync']['fsyncs_per_s']}, {live['fsync']['fsync_p99_le_ms']}",
            ),
            ("live: converged", f"{live['converged']} {live['convergence']}"),
            ("live: viewers disconnected", str(live["viewers_disconnected"])),
        ]
    cls = result.get("class")
    if cls and "time_to_welcome_ms" in cls:
        w = cls["time_to_welcome_ms"]
        rows += [
            ("class: viewers welcomed / failed", f"{cls['welcomed']} / {cls['failed']}"),
            ("class: time to welcome p50 / p99 / max (ms)", f"{w['p50']} / {w['p99']} / {w['max']}"),
            ("class: server CPU % during joins", str(cls["server_cpu_pct"])),
            ("class: loadgen CPU % per process", str(cls["loadgen_cpu_pct"])),
            (
                "class: teacher latency p50 / p99 / max (ms)",
                f"{cls['latency_ms']['p50']} / {cls['latency_ms']['p99']} / {cls['latency_ms']['max']}",
            ),
            ("class: RSS per connection (KiB)", str(cls["rss_per_connection_kib"])),
            ("class: converged, disconnected", f"{cls['converged']}, {cls['viewers_disconnected']}"),
        ]
    for name in ("live", "class"):
        sc = result.get(name) or {}
        if sc.get("error"):
            rows.append((f"{name}: ERROR", sc["error"]))
        if sc.get("server_log_problems"):
            rows.append((f"{name}: server log", f"{len(sc['server_log_problems'])} problem line(s)"))
    width = max((len(k) for k, _ in rows), default=10)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=500)
    p.add_argument("--editors", type=int, default=30)
    p.add_argument("--rate", type=float, default=2.0, help="ops per second per editor (Poisson)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of editing")
    p.add_argument("--probes", type=int, default=20, help="viewers that decode and timestamp every op")
    p.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-fsync runs the server with --unsafe-no-fsync, to measure what durability costs",
    )
    p.add_argument("--json-only", action="store_true")
    p.add_argument("--scenario", choices=("both", "live", "class"), default="both")
    p.add_argument("--class-spread", type=float, default=5.0, help="seconds over which the class joins")
    p.add_argument(
        "--presence", type=float, default=0.5, help="probability an edit is followed by a cursor update"
    )
    p.add_argument("--viewer-procs", type=int, default=2, help="processes the raw viewers are spread over")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.editors < 1 or args.viewers < 0 or args.probes < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("need --editors >= 1, --probes >= 1, --viewers >= 0, --rate > 0, --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)

    def say(text: str) -> None:
        if not args.json_only:
            print(text, file=sys.stderr, flush=True)

    started = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {
        "bench": "agora",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
    }
    ok = True
    for name, fn in (("live", scenario_live), ("class", scenario_class)):
        if args.scenario not in ("both", name):
            continue
        try:
            result[name] = fn(args, say)
        except Exception as exc:
            ok = False
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"[{name}] failed: {exc}")
        ok = ok and bool(result[name].get("converged"))
    line = json.dumps(result, separators=(",", ":"))
    print(line, flush=True)
    out = RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(line + "\n")
    if not args.json_only:
        print("\n" + table(result))
        print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
