"""`loadtest/locust/run SCENARIO …`: set a scenario up through the API, run locust headless in a
subprocess, then judge the result. Exit 0 when every threshold holds, 1 when one does not, 2 when
the scenario could not run (server down, key refused, kernels unavailable, locust failed).

This process never imports locust (which monkey-patches everything with gevent) nor trio; it
runs in `.venv-locust` and talks to the server with `requests` and, for the kernels check, with
`websocket-client`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import procstat
from setup_api import Api, CannotRun, big_notebook, kernel_notebook, lecture_notebook

HERE = Path(__file__).resolve().parent
SCENARIOS = {
    "classroom": ("scenario_classroom.py", ["Viewer", "Editor"]),
    "class-starts": ("scenario_class_starts.py", ["Viewer", "Teacher"]),
    "platform": ("scenario_platform.py", ["Platform"]),
    "kernels": ("scenario_kernels.py", ["Viewer", "Runner"]),
}
# Per scenario: viewers, editors, rate (ops/s per editor; runs/s for kernels; requests/s per
# platform user), duration (s).
DEFAULTS: dict[str, dict[str, float]] = {
    "classroom": {"viewers": 100, "editors": 10, "rate": 2, "duration": 30},
    "class-starts": {"viewers": 200, "editors": 1, "rate": 2, "duration": 15},
    "platform": {"users": 10, "rate": 5, "duration": 30},
    "kernels": {"viewers": 20, "editors": 2, "rate": 0.2, "duration": 30},
}
LATENCY_ROWS = ("edit→viewer", "execute→viewer")  # observations, not actions: not in the error rate
STARTUP = 4.0  # seconds locust needs to import and fork before it spawns users


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with each scenario's defaults filled in."""
    p = argparse.ArgumentParser(
        prog="loadtest/locust/run",
        description="Run a bundled locust load scenario against an Agora server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument(
        "--host", required=True, help="base URL of Agora (or of nginx in front), e.g. http://127.0.0.1:8000"
    )
    p.add_argument(
        "--api-key", default=os.environ.get("AGORA_API_KEY"), help="API key (default: $AGORA_API_KEY)"
    )
    p.add_argument("--viewers", type=int, help="viewers (classroom 100, class-starts 200, kernels 20)")
    p.add_argument("--editors", type=int, help="editors (classroom 10, class-starts 1, kernels 2)")
    p.add_argument("--users", type=int, help="platform: API clients (10)")
    p.add_argument(
        "--rate",
        type=float,
        help="ops/s per editor (2); kernels: runs/s per editor (0.2); platform: requests/s per user (5)",
    )
    p.add_argument(
        "--duration", type=float, help="measured seconds of typing / running / requests (30; class-starts 15)"
    )
    p.add_argument("--csv", help="write locust's CSVs as PREFIX_stats.csv, … (default: a temporary prefix)")
    p.add_argument(
        "--processes", type=int, help="locust --processes: fork this many load processes (-1: one per core)"
    )
    p.add_argument(
        "--spawn-rate", type=float, default=100.0, help="users started per second (not class-starts)"
    )
    p.add_argument(
        "--join-window", type=float, default=5.0, help="class-starts: seconds within which all viewers join"
    )
    p.add_argument(
        "--presence", type=float, default=0.5, help="fraction of edits followed by a cursor update"
    )
    p.add_argument(
        "--server-pid", type=int, help="server pid for its CPU (found by port when the server is local)"
    )
    p.add_argument(
        "--ws-reader",
        choices=("raw", "websocket-client"),
        default="raw",
        help="how users parse received frames: a small frame splitter on websocket-client's socket, or "
        "websocket-client's own parser (about ten times the CPU per frame)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scenario's notebooks afterwards")
    t = p.add_argument_group("thresholds (exit 1 when one does not hold)")
    t.add_argument("--max-p99-latency", type=float, default=100.0, help="p99 edit→viewer, ms")
    t.add_argument("--max-p99-welcome", type=float, default=1000.0, help="p99 time to welcome, ms")
    t.add_argument("--max-p99-output", type=float, default=2000.0, help="kernels: p99 execute→viewer, ms")
    t.add_argument("--max-error-rate", type=float, default=0.01, help="failed actions / actions")
    t.add_argument(
        "--min-delivery", type=float, default=0.999, help="ops received / ops due, over all viewers"
    )
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.scenario].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("viewers", "editors", "users"):
        if getattr(args, key) is None:
            setattr(args, key, 0)
    if not args.api_key:
        p.error("an API key is needed: --api-key KEY or AGORA_API_KEY")
    if args.rate <= 0 or args.duration <= 0:
        p.error("--rate and --duration must be positive")
    return args


def kernels_preflight(api: Api, host: str, notebook: str) -> None:
    """Raise `CannotRun` unless this server runs kernels: the kernel route exists and an
    `execute` over the WebSocket produces output (which also warms the kernel up)."""
    import orjson
    import websocket

    try:
        api.call("GET", f"/api/v1/notebooks/{notebook}/kernel")
    except CannotRun as exc:
        raise CannotRun(f"kernels are not available on this server ({exc})") from None
    token = api.tokens(notebook, "editor", 1, 600)[0]
    ws = websocket.create_connection(
        f"{ws_base(host)}/api/v1/notebooks/{notebook}/ws?token={token}", timeout=90, skip_utf8_validation=True
    )
    try:
        welcome = orjson.loads(ws.recv())
        cell = next(c["id"] for c in welcome["notebook"]["cells"] if c["cell_type"] == "code")
        ws.send(orjson.dumps({"type": "execute", "cells": [cell]}).decode())
        deadline = time.time() + 90
        while time.time() < deadline:
            message = orjson.loads(ws.recv())
            if message.get("type") == "error":
                raise CannotRun(
                    "kernels are not available on this server: "
                    f"{message.get('code')}: {message.get('message')}"
                )
            for entry in message.get("ops", []) if message.get("type") == "ops" else []:
                for comp in entry["op"]:
                    if (
                        comp.get("t") == "exec_state"
                        and comp.get("id") == cell
                        and comp.get("state") in ("done", "error")
                    ):
                        if comp["state"] == "error":
                            raise CannotRun("the kernel check cell `print('ready')` ended in error")
                        return
        raise CannotRun("no kernel answered `print('ready')` within 90 s")
    except websocket.WebSocketException as exc:
        raise CannotRun(f"kernel check: the WebSocket failed: {exc}") from None
    finally:
        ws.close()


def ws_base(host: str) -> str:
    """http(s)://host[:port][/prefix] → ws(s)://host[:port][/prefix]."""
    u = urlsplit(host.rstrip("/"))
    return f"{'wss' if u.scheme == 'https' else 'ws'}://{u.netloc}{u.path}"


@dataclass
class Plan:
    """The scenario's timeline (epoch seconds) and locust's user counts. The runner stops locust
    itself (SIGTERM, which locust handles like its time limit) once the window is over and
    everything has arrived, so no sample depends on how long locust took to start."""

    users: int
    spawn_rate: float
    t0: float
    t_end: float
    drain: float  # seconds between the end of the window (or settle()) and stopping locust


def plan(args: argparse.Namespace) -> Plan:
    """The timeline and user counts for this run, from now."""
    now = time.time()
    # After the window: each load process reports its statistics to the master (every 3 s) and
    # locust rewrites the CSV (every 1 s); only then is the CSV complete. (WebSocket scenarios
    # first wait until every viewer holds the head: see settle().)
    drain = (3.5 if args.processes else 0.5) + 1.5
    if args.scenario == "platform":
        users = args.users
        spawn = max(1.0, min(args.spawn_rate, float(users)))
        t0 = now + STARTUP + users / spawn
        return Plan(users, spawn, t0, t0 + args.duration, drain)
    users = args.viewers + args.editors
    if args.scenario == "class-starts":
        spawn = max(1.0, users / args.join_window)
        t0 = now + STARTUP  # the teacher types while the class joins
    else:
        spawn = args.spawn_rate
        t0 = now + STARTUP + users / spawn + 2.0  # everyone has joined before the measured window
    return Plan(users, spawn, t0, t0 + args.duration, drain)


def settle(
    api: Api, notebook: str, out_dir: Path, proc: subprocess.Popen[bytes], limit: float = 60.0
) -> None:
    """After the window, wait until every viewer holds the head and the head has stopped moving
    (the last edits and, for kernels, the last outputs have arrived), for at most `limit` s."""
    deadline = time.time() + limit
    last_head = -1
    while proc.poll() is None and time.time() < deadline:
        time.sleep(1.0)
        try:
            head = api.head(notebook)
        except CannotRun:
            return
        conns, _ = read_reports(out_dir)
        viewers = [c for c in conns if c["role"] == "viewer" and c["welcomed"] and not c["lost"]]
        if head == last_head and all(c["version"] >= head for c in viewers):
            return
        last_head = head


def setup(api: Api, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Create the scenario's notebook and tokens; returns its id and the users' config."""
    ttl = int(min(86400, args.duration + 3600))
    if args.scenario == "platform":
        nb = api.create(lecture_notebook(), "platform")
        return nb, {"api_key": args.api_key}
    content = {"classroom": lecture_notebook, "class-starts": big_notebook, "kernels": kernel_notebook}
    nb = api.create(content[args.scenario](), args.scenario)
    if args.scenario == "kernels":
        kernels_preflight(api, args.host, nb)
    return nb, {
        "viewer_tokens": api.tokens(nb, "viewer", min(args.viewers, 1000), ttl) or [""],
        "editor_tokens": api.tokens(nb, "editor", args.editors, ttl) or [""],
    }


def read_stats(prefix: str) -> list[dict[str, str]]:
    """The rows of locust's `PREFIX_stats.csv`."""
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_reports(out_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every load process's connection summaries (each tagged with `proc`) and flags."""
    conns: list[dict[str, Any]] = []
    flags: dict[str, Any] = {}
    for path in sorted(out_dir.glob("proc-*.json")):
        data = json.loads(path.read_text())
        conns += [dict(c, proc=path.stem) for c in data["connections"]]
        flags.update(data["flags"])
    return conns, flags


def delivery(conns: list[dict[str, Any]], head: int) -> tuple[float | None, int]:
    """Ops entries viewers received / ops committed after their welcome; and viewers that never
    got a welcome. Every viewer was open until after the last op, so each should hold the head."""
    due = got = 0
    for c in conns:
        if c["role"] != "viewer" or not c["welcomed"]:
            continue
        due += max(0, head - c["welcome_version"])
        got += min(c["entries"], max(0, head - c["welcome_version"]))
    unwelcomed = sum(1 for c in conns if c["role"] == "viewer" and not c["welcomed"])
    return (got / due if due else None), unwelcomed


def num(value: str) -> float:
    """A CSV number, NaN when empty (locust writes `N/A` for no samples)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def cpu_report(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], wall: float
) -> dict[str, Any]:
    """Percent of one core per watched process group over the measured window."""
    out: dict[str, Any] = {}
    for name, b in before.items():
        a = after.get(name, {})
        per = {pid: (a[pid] - b[pid]) / wall * 100 for pid in b if pid in a}
        if per:
            out[name] = {"total": sum(per.values()), "processes": sorted(per.values(), reverse=True)}
    return out


def sample_cpu(locust_pid: int, server_pid: int | None) -> dict[str, dict[int, float]]:
    """CPU seconds now of the load generator's process tree and of the server."""
    out = {"load generator": procstat.tree_cpu(locust_pid)}
    if server_pid is not None:
        s = procstat.cpu_seconds(server_pid)
        if s is not None:
            out[f"server ({procstat.command(server_pid)}, pid {server_pid})"] = {server_pid: s}
    return out


def find_server_pid(args: argparse.Namespace) -> int | None:
    """`--server-pid`, or the local process listening on `--host`'s port, if any."""
    if args.server_pid:
        return int(args.server_pid)
    u = urlsplit(args.host)
    if u.hostname in ("127.0.0.1", "localhost", "::1"):
        return procstat.listening_pid(u.port or (443 if u.scheme == "https" else 80))
    return None


def judge(
    args: argparse.Namespace, rows: list[dict[str, str]], ratio: float | None
) -> tuple[list[tuple[str, str, bool]], float]:
    """(check, observed vs limit, holds) for every threshold of this scenario, and the error rate."""
    by_name = {r["Name"]: r for r in rows if r["Type"] == "WS"}
    actions = sum(
        int(r["Request Count"]) for r in rows if r["Name"] != "Aggregated" and r["Name"] not in LATENCY_ROWS
    )
    failures = sum(int(r["Failure Count"]) for r in rows if r["Name"] != "Aggregated")
    error_rate = failures / actions if actions else 1.0
    checks = [("error rate", f"{error_rate:.4f} ≤ {args.max_error_rate}", error_rate <= args.max_error_rate)]

    def p99(name: str, limit: float, label: str) -> None:
        row = by_name.get(name)
        if row is None or int(row["Request Count"]) == 0:
            checks.append((label, "no samples", False))
            return
        value = num(row["99%"])
        checks.append((label, f"{value:.0f} ms ≤ {limit:.0f} ms", value <= limit))

    if args.scenario in ("classroom", "class-starts"):
        p99("welcome", args.max_p99_welcome, "p99 welcome")
        if args.editors:
            p99("edit→viewer", args.max_p99_latency, "p99 edit→viewer")
    if args.scenario == "kernels":
        p99("welcome", args.max_p99_welcome, "p99 welcome")
        p99("execute→viewer", args.max_p99_output, "p99 execute→viewer")
    if args.scenario != "platform" and args.viewers:
        if ratio is None:
            checks.append(("delivery", "nothing was due", args.editors == 0))
        else:
            checks.append(("delivery", f"{ratio:.5f} ≥ {args.min_delivery}", ratio >= args.min_delivery))
    return checks, error_rate


def print_summary(
    rows: list[dict[str, str]], checks: list[tuple[str, str, bool]], cpu: dict[str, Any], extra: list[str]
) -> None:
    """The custom metrics, delivery, CPU and threshold verdicts, after locust's own table."""
    print("\n=== Agora custom metrics (ms) ===")
    print(f"{'metric':<18}{'count':>9}{'fails':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}")
    for r in rows:
        if r["Type"] != "WS":
            continue
        print(
            f"{r['Name']:<18}{r['Request Count']:>9}{r['Failure Count']:>7}{r['50%']:>8}{r['95%']:>8}"
            f"{r['99%']:>8}{num(r['Max Response Time']):>9.0f}"
        )
    for line in extra:
        print(line)
    for name, c in cpu.items():
        parts = " + ".join(f"{x:.1f}" for x in c["processes"])
        print(f"CPU {name}: {c['total']:.1f} % of one core ({parts})")
    print("\n=== thresholds ===")
    for label, text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {text}")


def main(argv: list[str]) -> int:
    """Run one scenario; returns the exit code (0 thresholds hold, 1 not, 2 could not run)."""
    args = parse_args(argv)
    api = Api(args.host, args.api_key)
    notebook: str | None = None
    try:
        api.check()
        notebook, users_cfg = setup(api, args)
        return run_locust(args, api, notebook, users_cfg)
    except CannotRun as exc:
        print(f"agora-locust: cannot run {args.scenario}: {exc}", file=sys.stderr)
        return 2
    finally:
        if notebook and not args.keep:
            api.delete(notebook)


def run_locust(args: argparse.Namespace, api: Api, notebook: str, users_cfg: dict[str, Any]) -> int:
    """Start locust on the prepared notebook, sample CPU, stop it when done, judge the result.
    The work dir keeps only locust's CSVs afterwards (when no `--csv`): the config holds tokens
    and, for `platform`, the API key."""
    work = Path(tempfile.mkdtemp(prefix="agora-locust-"))
    try:
        return _run_locust(args, api, notebook, users_cfg, work)
    finally:
        (work / "config.json").unlink(missing_ok=True)
        shutil.rmtree(work / "reports", ignore_errors=True)
        if not any(work.iterdir()):
            work.rmdir()


def _run_locust(
    args: argparse.Namespace, api: Api, notebook: str, users_cfg: dict[str, Any], work: Path
) -> int:
    out_dir = work / "reports"
    out_dir.mkdir()
    prefix = args.csv or str(work / "locust")
    pl = plan(args)
    config = {
        "ws_base": ws_base(args.host),
        "notebook": notebook,
        "viewers": args.viewers,
        "editors": args.editors,
        "rate": args.rate,
        "presence": args.presence,
        "reader": args.ws_reader,
        "t0": pl.t0,
        "t_end": pl.t_end,
        "out_dir": str(out_dir),
        **users_cfg,
    }
    (work / "config.json").write_text(json.dumps(config))
    file, classes = SCENARIOS[args.scenario]
    if args.scenario != "platform":
        classes = [c for c, n in zip(classes, (args.viewers, args.editors), strict=True) if n > 0]
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(HERE / file),
        "--headless",
        "--only-summary",
        "-u",
        str(pl.users),
        "-r",
        f"{pl.spawn_rate:g}",
        "-t",
        f"{math.ceil(pl.t_end - time.time() + pl.drain) + 180}s",  # a backstop: the runner stops it
        "--stop-timeout",
        "0",
        "--csv",
        prefix,
        "--host",
        args.host,
        "--loglevel",
        "WARNING",
    ]
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    cmd += classes
    env = dict(os.environ, AGORA_LOCUST_CONFIG=str(work / "config.json"), PYTHONPATH=str(HERE))
    server_pid = find_server_pid(args)
    print(
        f"agora-locust: {args.scenario} on {notebook}: {pl.users} users, measured window "
        f"{args.duration:g} s starting in {pl.t0 - time.time():.1f} s; "
        f"locust stops when every viewer has the last edit",
        flush=True,
    )
    proc = subprocess.Popen(cmd, env=env)
    before: dict[str, dict[int, float]] = {}
    after: dict[str, dict[int, float]] = {}
    t_before = t_after = 0.0
    try:
        while proc.poll() is None and time.time() < pl.t0:
            time.sleep(0.05)
        before, t_before = sample_cpu(proc.pid, server_pid), time.time()
        # Sample through the window and keep the last sample taken while locust still ran.
        while proc.poll() is None and time.time() < pl.t_end:
            time.sleep(min(0.5, max(0.0, pl.t_end - time.time())))
            if proc.poll() is None:
                after, t_after = sample_cpu(proc.pid, server_pid), time.time()
        if args.scenario != "platform":
            settle(api, notebook, out_dir, proc)
        stop_at = time.time() + pl.drain
        while proc.poll() is None and time.time() < stop_at:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    if not Path(f"{prefix}_stats.csv").exists():
        print(f"agora-locust: locust exited with {rc} and wrote no statistics", file=sys.stderr)
        return 2
    rows = read_stats(prefix)
    conns, flags = read_reports(out_dir)
    if "kernels_unavailable" in flags:
        print(
            "agora-locust: cannot run kernels: the server answered kernels_unavailable: "
            f"{flags['kernels_unavailable']}",
            file=sys.stderr,
        )
        return 2
    extra: list[str] = []
    ratio: float | None = None
    if args.scenario != "platform":
        welcomes = next((r for r in rows if r["Type"] == "WS" and r["Name"] == "welcome"), None)
        if welcomes is None or int(welcomes["Request Count"]) == int(welcomes["Failure Count"]):
            print("agora-locust: no WebSocket could connect (see the failures above)", file=sys.stderr)
            return 2
        head = api.head(notebook)
        ratio, unwelcomed = delivery(conns, head)
        per_process = sorted(Counter(c["proc"] for c in conns).values(), reverse=True)
        viewers = [c for c in conns if c["role"] == "viewer"]
        if args.processes:
            extra.append(f"users per load process: {per_process}")
        extra.append(
            f"delivery: {'n/a' if ratio is None else f'{ratio:.5f}'} over {len(viewers)} viewers "
            f"(head v{head}; {unwelcomed} never welcomed; {sum(c['gaps'] for c in conns)} version gaps; "
            f"{sum(1 for c in conns if c['lost'])} lost; close codes "
            f"{sorted({code for c in conns for code in c['close_codes']}) or 'none'})"
        )
    cpu = cpu_report(before, after, t_after - t_before) if t_after > t_before else {}
    checks, _ = judge(args, rows, ratio)
    print_summary(rows, checks, cpu, extra)
    print(f"CSV: {prefix}_stats.csv")
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
