"""kernels: `--editors` editors run cells while `--viewers` viewers watch the outputs arrive.

Each editor owns a code cell. At `--rate` runs/s it rewrites the cell's source to one of three
programs (a print, a short loop, a tiny PNG shown with `display`), each of whose first output
carries `@R<run id>;`, waits for that edit's ack, sends `execute`, then sets the cell metadata
key `agora_load_run` to `{"run", "t"}` with the execute time. Viewers match the run id in the
first output they receive with that metadata and record `execute→viewer`; editors record
`ack` and, for their own runs, `execute→output` (to the editor's own socket).

A server that answers `execute` with the `kernels_unavailable` error makes the whole run exit 2
(the runner checks before starting locust too).
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from agora_proto import RUN_META_KEY, now_us, output_run_ids, replace_text, run_code
from agora_users import EditorUser, EditViewer
from agora_ws import CONFIG, fire, seconds_until, set_flag
from locust import task

KINDS = ("print", "loop", "image")
OUTPUT_TIMEOUT = 60.0


class RunTimes:
    """Per connection: execute times (from the metadata) and first-output arrival times, by run."""

    def __init__(self) -> None:
        self.executed: dict[str, int] = {}
        self.arrived: dict[str, int] = {}
        self.done: set[str] = set()

    def take(self, t_us: int, message: dict[str, Any]) -> list[tuple[str, float]]:
        """The runs whose execute→output time this message completes (run id, ms)."""
        out: list[tuple[str, float]] = []
        for entry in message.get("ops", []):
            for comp in entry["op"]:
                if comp.get("t") == "meta_set" and comp.get("key") == RUN_META_KEY:
                    value = comp.get("value") or {}
                    run, t_exec = value.get("run"), value.get("t")
                    if isinstance(run, str) and isinstance(t_exec, int) and run not in self.done:
                        self.executed[run] = t_exec
                        if run in self.arrived:
                            out.append((run, (self.arrived.pop(run) - t_exec) / 1000.0))
                for run in output_run_ids(comp):
                    if run in self.done or run in self.arrived:
                        continue
                    if run in self.executed:
                        out.append((run, (t_us - self.executed.pop(run)) / 1000.0))
                    else:
                        self.arrived[run] = t_us
        for run, _ in out:
            self.done.add(run)
        return out


class Viewer(EditViewer):
    """Watches outputs arrive and times each run (`execute→viewer`)."""

    fixed_count = int(CONFIG["viewers"])

    def on_start(self) -> None:
        """Connect with an empty table of runs."""
        self.runs = RunTimes()
        super().on_start()

    def handle(self, t_us: int, payload: bytes, message: dict[str, Any]) -> None:
        """Match run ids in outputs with the execute times in the metadata."""
        if message.get("type") == "ops":
            for _, ms in self.runs.take(t_us, message):
                fire("execute→viewer", ms, len(payload))


class Runner(EditorUser):
    """Runs its own cell again and again (a print, a loop, an image)."""

    fixed_count = int(CONFIG["editors"])

    def on_start(self) -> None:
        """Connect with no run pending."""
        self.length = 0
        self.outputs: dict[str, float] = {}
        self.sent_exec: dict[str, int] = {}
        super().on_start()

    def handle(self, t_us: int, payload: bytes, message: dict[str, Any]) -> None:
        """Refusals (`kernels_unavailable`), failed runs, and its own runs' first outputs."""
        kind = message.get("type")
        if kind == "error" and message.get("code") == "kernels_unavailable":
            set_flag("kernels_unavailable", message.get("message", ""))
            fire("execute→output", 0, 0, RuntimeError("kernels_unavailable"))
            return
        if kind == "ops":
            for entry in message["ops"]:
                for comp in entry["op"]:
                    if (
                        comp.get("t") == "exec_state"
                        and comp.get("state") == "error"
                        and comp.get("id") == self.cell
                    ):
                        fire("run", 0, 0, RuntimeError("a run ended in exec_state error"))
                    for run in output_run_ids(comp):
                        t_exec = self.sent_exec.pop(run, None)
                        if t_exec is not None:
                            fire("execute→output", (t_us - t_exec) / 1000.0, len(payload))
        super().handle(t_us, payload, message)

    def on_stop(self) -> None:
        """Runs still without output well after their execute are failures."""
        stale = now_us() - int(OUTPUT_TIMEOUT * 1_000_000) // 6
        for run, t_exec in list(self.sent_exec.items()):
            if t_exec < stale:
                fire("execute→output", (now_us() - t_exec) / 1000.0, 0, TimeoutError(f"run {run}: no output"))
        super().on_stop()

    @task
    def run_cells(self) -> None:
        """Make the own cell, then run programs in it at `rate` from t0 to t_end."""
        self.cell = ""
        if self.conn.ws is None:
            self.idle()
        self.cell = self.make_own_cell()
        rate = float(CONFIG["rate"])
        gevent.sleep(seconds_until(CONFIG["t0"]))
        next_due = time.time() + self.rnd.uniform(0, 1 / rate)
        n = 0
        while time.time() < CONFIG["t_end"] and self.conn.ws is not None:
            gevent.sleep(seconds_until(next_due))
            next_due = max(next_due + self.rnd.expovariate(rate), time.time() - 1)
            n += 1
            run = f"{self.conn.sync.client}-{n}"
            code = run_code(KINDS[n % len(KINDS)], run)
            if not self.submit(replace_text(self.cell, self.length, code)):
                continue
            self.length = len(code)
            if not self.acked.wait(OUTPUT_TIMEOUT):  # the source must be committed before it runs
                continue
            t_exec = now_us()
            self.sent_exec[run] = t_exec
            self.conn.send(b'{"type":"execute","cells":["' + self.cell.encode() + b'"]}')
            meta = [
                {"t": "meta_set", "id": self.cell, "key": RUN_META_KEY, "value": {"run": run, "t": t_exec}}
            ]
            self.submit(meta)
        self.idle()
