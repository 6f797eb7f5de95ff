"""The user kinds the WebSocket scenarios combine: a watching viewer and a typing editor.

Both are abstract; a scenario module subclasses them with its `fixed_count`. Timing comes from
the runner's config: editors type from `t0` to `t_end` (epoch seconds), so that every viewer has
joined before the measured window and every edit has reached every viewer before locust stops.
"""

from __future__ import annotations

import random
import string
import time
from typing import Any

import gevent
import gevent.event
import orjson
from agora_proto import (
    EditorState,
    InFlight,
    append_text,
    edit_latencies_ms,
    edit_marker,
    now_us,
    own_cell_insert,
)
from agora_ws import CONFIG, AgoraWsUser, fire, seconds_until
from locust import constant, task

ACK_TIMEOUT = 30.0
WORDS = ["x", "y = x + 1", "print(y)", "for i in range(3):", "    total += i", "df.head()", "# note"]


class EditViewer(AgoraWsUser):
    """A viewer that times every edit marker it receives (`edit→viewer`)."""

    abstract = True
    role = "viewer"
    wait_time = constant(1)

    def handle(self, t_us: int, payload: bytes, message: dict[str, Any]) -> None:
        """Time every edit marker of an ops frame (or of a resume welcome's ops)."""
        # Ops frames, and the ops a resume welcome carries (a snapshot welcome's payload is
        # empty here: the markers in its cell sources are not new edits).
        if message.get("type") in ("ops", "welcome"):
            for ms in edit_latencies_ms(payload, t_us):
                fire("edit→viewer", ms, len(payload))

    @task
    def watch(self) -> None:
        """Viewers only listen; the receive greenlet does the work."""
        gevent.sleep(1)


class EditorUser(AgoraWsUser):
    """An editor with one op in flight, working in a cell of its own (see agora_proto)."""

    abstract = True
    role = "editor"
    wait_time = constant(0)

    def on_start(self) -> None:
        """Connect, with the editor state bound to the connection's versions."""
        self.ed = EditorState()
        self.acked = gevent.event.Event()
        self.acked.set()
        self.rnd = random.Random()
        super().on_start()
        self.ed.sync = self.conn.sync

    def handle(self, t_us: int, payload: bytes, message: dict[str, Any]) -> None:
        """Acks (own op back, or an `ack` frame), resends after a resume, rejects."""
        kind = message.get("type")
        done: InFlight | None = None
        if kind == "ops":
            done = self.ed.acknowledged(message["ops"])
        elif kind == "ack":
            done = self.ed.take_ack(message)
        elif kind == "welcome":  # resumed after a close: the resume ops may hold our op
            done = self.ed.acknowledged(message.get("ops") or [])
            if done is None and self.ed.inflight is not None:
                self.conn.send(self.ed.resend_message())
        elif kind == "reject":
            # Our ops only touch our own cell, so a reject is a bug somewhere: report it. The
            # op is dropped (its seq is free again); nothing else we hold depends on it.
            if self.ed.rejected(message) is not None:
                fire("ack", 0, 0, ConnectionError(f"reject: {message.get('error')}"))
                self.on_reject()
                self.acked.set()
        if done is not None:
            fire("ack", (t_us - done.sent_us) / 1000.0, len(payload))
            self.acked.set()

    def on_reject(self) -> None:
        """Scenario hook: the in-flight op was rejected."""

    def submit(self, op: list[dict[str, Any]]) -> bool:
        """Wait for the previous op's ack (one in flight), then send `op` based on the last
        version seen. False if the connection is gone or the ack never came."""
        if not self.acked.wait(ACK_TIMEOUT):
            fire("ack", ACK_TIMEOUT * 1000, 0, TimeoutError("no ack within 30 s"))
            return False
        if self.conn.ws is None:
            return False
        self.acked.clear()
        return self.conn.send(self.ed.op_message(op, now_us()))

    def make_own_cell(self) -> str:
        """Insert this editor's cell; returns its id."""
        cell = "e" + "".join(self.rnd.choices(string.ascii_letters + string.digits, k=12))
        pos = "V" + "".join(self.rnd.choices(string.ascii_letters + string.digits, k=6))
        self.submit(own_cell_insert(cell, pos))
        return cell

    def idle(self) -> None:
        """Nothing more to do: stay connected until locust stops the user."""
        while True:
            gevent.sleep(1)


class TypingEditor(EditorUser):
    """Types at `rate` ops/s (Poisson), each op appending `@T<send time>;` and a few characters to
    its own cell; half the edits (`presence`) are followed by a cursor update, as a browser does."""

    abstract = True

    def on_start(self) -> None:
        """Start with an empty cell of its own."""
        self.length = 0
        self.last_text = ""
        super().on_start()

    def on_reject(self) -> None:
        """The rejected text was not committed: forget its length."""
        self.length -= len(self.last_text)

    @task
    def type_(self) -> None:
        """Make the own cell, then type from t0 to t_end, then stay connected."""
        if self.conn.ws is None:
            self.idle()
        cell = self.make_own_cell()
        rate = float(CONFIG["rate"])
        gevent.sleep(seconds_until(CONFIG["t0"]))
        next_due = time.time() + self.rnd.uniform(0, 1 / rate)
        while time.time() < CONFIG["t_end"] and self.conn.ws is not None:
            gevent.sleep(seconds_until(next_due))
            next_due = max(next_due + self.rnd.expovariate(rate), time.time() - 1)
            if not self.acked.wait(ACK_TIMEOUT):
                fire("ack", ACK_TIMEOUT * 1000, 0, TimeoutError("no ack within 30 s"))
                continue
            if time.time() >= CONFIG["t_end"]:
                break
            text = edit_marker(now_us()) + self.rnd.choice(WORDS) + "\n"
            self.last_text = text
            self.length += len(text)
            if not self.submit(append_text(cell, self.length - len(text), text)):
                self.length -= len(text)
                continue
            if self.rnd.random() < float(CONFIG.get("presence", 0.5)):
                cursor = {"cell": cell, "anchor": self.length, "head": self.length}
                self.conn.send(orjson.dumps({"type": "presence", "cursor": cursor}))
        self.idle()
