"""How the benchmark talks to its load processes: one JSON object per line both ways.

The parent writes commands (`{"cmd": ...}`) to a child's stdin; the child answers with events
(`{"event": ...}`) on its stdout. Every wait is bounded.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent


# ---- child side ---------------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(orjson.dumps({"event": event, **fields}).decode() + "\n")
    sys.stdout.flush()


async def next_command() -> dict[str, Any]:
    """The next command from the parent; `quit` when the parent went away."""
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if not line:
        return {"cmd": "quit"}
    command: dict[str, Any] = orjson.loads(line)
    return command


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = orjson.loads(Path(sys.argv[1]).read_bytes())
    return config


# ---- parent side --------------------------------------------------------------------------------


class Child:
    """A load process (`python -m loadtest.<module> CONFIG`) and its event stream."""

    def __init__(self, module: str, config_path: Path, log_path: Path) -> None:
        self.module = module
        self.log = open(log_path, "ab")  # the child's stderr, for post-mortems
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"loadtest.{module}", str(config_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(orjson.loads(line))
            except orjson.JSONDecodeError:
                sys.stderr.write(f"[{self.module}] {line.decode(errors='replace')}")
        self.events.put(None)

    def send(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"cmd": cmd, **fields}) + b"\n")
        self.proc.stdin.flush()

    def wait(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event named `event` (other events are skipped); raises on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.module}: no {event!r} within {timeout:.0f} s")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                raise RuntimeError(f"{self.module} exited ({self.proc.poll()}) before {event!r}")
            if item.get("event") == event:
                return item

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
