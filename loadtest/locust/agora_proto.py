"""The parts of the Agora sync protocol the locust scenarios need, with no locust or gevent in it.

An editor here owns one cell that nobody else edits. Its ops therefore never need transforming:
an op computed from the editor's own copy of that cell is valid at any version, and the server's
transform against other editors' ops (which touch other cells) leaves it unchanged. What the
protocol still asks, this module does: `seq` starts at 1 and goes up by one per op, at most one
op is in flight, every op is based on the last version this connection has seen, our own
`(client, seq)` coming back in an `ops` frame (or an `ack` frame for a resubmit) is the
acknowledgement, and a reject means resync (reconnect with `since` and the same client id, then
resend the in-flight op with its original seq).

Latency travels inside the document: an edit carries a marker `@T<microseconds since the
epoch>;` taken when it is sent, kernel code prints `@R<run id>;`. Viewers in any process on the
same host read the marker from the frame bytes and compare it with their own clock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

EDIT_MARKER = re.compile(rb"@T(\d{13,17});")
RUN_MARKER = re.compile(r"@R([A-Za-z0-9_-]{1,80});")
RUN_META_KEY = "agora_load_run"

# A 1x1 transparent PNG, the "image" a kernels-scenario cell displays.
TINY_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9


class FrameReader:
    """Splits the server's byte stream into `(opcode, payload)` frames. Server frames are unmasked
    and, from Agora, never fragmented (a continuation frame is passed through as it comes)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Take received bytes; return the frames they complete."""
        buf = self.buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            n = buf[pos + 1] & 0x7F
            if n < 126:
                start = pos + 2
            elif n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if end < start + n:
                break
            out.append((buf[pos] & 0x0F, bytes(buf[start : start + n])))
            pos = start + n
        if pos:
            del buf[:pos]
        return out


def now_us() -> int:
    """Wall-clock microseconds since the epoch: the clock every load process on a host shares."""
    return time.time_ns() // 1000


def edit_marker(t_us: int) -> str:
    """The text an editor inserts so that viewers can time the edit."""
    return f"@T{t_us};"


def edit_latencies_ms(payload: bytes, t_recv_us: int) -> list[float]:
    """Edit→viewer latencies (ms) for every edit marker in one received frame."""
    return [(t_recv_us - int(m.group(1))) / 1000.0 for m in EDIT_MARKER.finditer(payload)]


@dataclass
class SyncState:
    """What one connection knows of the notebook: the last version and the gap count."""

    client: str = ""
    version: int = 0
    welcome_version: int = 0
    entries: int = 0  # ops entries received since the welcome
    gaps: int = 0  # entries that did not carry exactly version + 1
    welcomed: bool = False

    def welcome(self, message: dict[str, Any]) -> None:
        """Take a welcome: a snapshot (first connect, or a `since` the server could not serve; ops
        in between are then missing from `entries`) or a resume whose ops are ordinary entries."""
        self.client = message["client"]
        ops = message.get("ops")
        if not self.welcomed:
            self.welcomed = True
            self.welcome_version = message["version"] - (len(ops) if ops is not None else 0)
            self.version = self.welcome_version
        if ops is not None:
            self.take_entries(ops)
        self.version = message["version"]

    def take_entries(self, entries: list[dict[str, Any]]) -> None:
        """Advance over committed ops entries, counting any gap or duplicate."""
        for entry in entries:
            v = entry["v"]
            if v != self.version + 1:
                self.gaps += 1
            self.version = max(self.version, v)
            self.entries += 1


@dataclass
class InFlight:
    """The one op this editor has sent and not yet seen acknowledged."""

    seq: int
    op: list[dict[str, Any]]
    sent_us: int


@dataclass
class EditorState:
    """The editor half of the protocol for an editor that only touches its own cell."""

    sync: SyncState = field(default_factory=SyncState)
    seq: int = 0
    inflight: InFlight | None = None
    acked: int = 0
    rejects: int = 0

    def op_message(self, op: list[dict[str, Any]], sent_us: int) -> bytes:
        """Take the next seq for `op`, mark it in flight and encode it (base = last version seen)."""
        assert self.inflight is None, "one op in flight"
        self.seq += 1
        self.inflight = InFlight(self.seq, op, sent_us)
        return orjson.dumps({"type": "op", "seq": self.seq, "base": self.sync.version, "op": op})

    def resend_message(self) -> bytes:
        """The in-flight op again, same seq, based on the version seen now (after a resync)."""
        assert self.inflight is not None
        return orjson.dumps(
            {"type": "op", "seq": self.inflight.seq, "base": self.sync.version, "op": self.inflight.op}
        )

    def acknowledged(self, entries: list[dict[str, Any]]) -> InFlight | None:
        """The in-flight op if these committed entries (already taken by `sync`) hold it."""
        done = self.inflight
        if done is not None:
            for entry in entries:
                if entry["client"] == self.sync.client and entry["seq"] == done.seq:
                    self.inflight = None
                    self.acked += 1
                    return done
        return None

    def rejected(self, message: dict[str, Any]) -> InFlight | None:
        """A reject of the in-flight op: it was not committed and its seq is free again."""
        done = self.inflight
        if done is not None and message.get("seq") == done.seq:
            self.inflight = None
            self.seq -= 1
            self.rejects += 1
            return done
        return None

    def take_ack(self, message: dict[str, Any]) -> InFlight | None:
        """An `ack` frame (a resubmit that was already committed)."""
        done = self.inflight
        if done is not None and message["seq"] == done.seq:
            self.inflight = None
            self.acked += 1
            return done
        return None


def own_cell_insert(cell_id: str, pos: str, source: str = "") -> list[dict[str, Any]]:
    """The op that creates the editor's own code cell."""
    return [{"t": "cell_insert", "id": cell_id, "pos": pos, "cell": {"cell_type": "code", "source": source}}]


def append_text(cell_id: str, length: int, text: str) -> list[dict[str, Any]]:
    """Type `text` at the end of a cell whose source is `length` code points long."""
    return [{"t": "text", "id": cell_id, "ops": [length, text] if length else [text]}]


def replace_text(cell_id: str, length: int, text: str) -> list[dict[str, Any]]:
    """Replace the whole source of a cell (`length` code points) with `text`."""
    return [{"t": "text", "id": cell_id, "ops": [{"d": length}, text] if length else [text]}]


def run_code(kind: str, run_id: str) -> str:
    """Cell source for one kernels-scenario run: its first output carries `@R<run_id>;`."""
    marker = f"@R{run_id};"
    if kind == "print":
        return f"print({marker!r})"
    if kind == "loop":
        return f"print({marker!r})\nfor i in range(20):\n    print(i, i * i)"
    if kind == "image":
        return (
            "from IPython.display import display\n"
            f"display({{'image/png': {TINY_PNG_B64!r}, 'text/plain': {marker!r}}}, raw=True)"
        )
    raise ValueError(f"unknown run kind {kind!r}")


def output_run_ids(component: dict[str, Any]) -> list[str]:
    """Run ids marked in the output a server component carries (stream text or display data)."""
    t = component.get("t")
    if t == "stream_append":
        return RUN_MARKER.findall(component.get("text", ""))
    if t in ("outputs_append", "display_update"):
        output = component.get("output", {})
        texts: list[str] = []
        text = output.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif isinstance(text, list):
            texts.extend(x for x in text if isinstance(x, str))
        plain = output.get("data", {}).get("text/plain")
        if isinstance(plain, str):
            texts.append(plain)
        elif isinstance(plain, list):
            texts.extend(x for x in plain if isinstance(x, str))
        return [run for s in texts for run in RUN_MARKER.findall(s)]
    return []
