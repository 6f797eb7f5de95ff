"""The cheap viewers: hundreds of raw sockets in one trio process that only count.

Each viewer does the HTTP upgrade by hand, then finds frame boundaries in the server's
unmasked frames without decoding JSON: it counts frames and bytes, notes when the first frame
(the welcome) is complete, and keeps only the payload of the last `ops` frame (and the head of
the welcome) so that, at the end, the highest version it saw can be compared with the server's
head. It never sends anything but a masked close frame on the way out.

    python -m loadtest.viewers CONFIG.json   (driven by loadtest.bench over stdin/stdout)
"""

from __future__ import annotations

import functools
import math
import random
import re
import socket
from typing import Any

import orjson
import trio

from loadtest import wire
from loadtest.ctl import emit, load_config, next_command

OPS_PREFIX = b'{"type":"ops"'
VERSION_RE = re.compile(rb'"version":(\d+)')


class RawViewer:
    """One raw viewer's counters and its streaming frame scanner."""

    __slots__ = (
        "cap",
        "cap_kind",
        "close_code",
        "connect_end",
        "connect_start",
        "error",
        "frames",
        "hdr",
        "index",
        "last_ops",
        "nbytes",
        "rem",
        "sock",
        "state",
        "welcome_head",
        "welcome_time",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.sock: socket.socket | None = None
        self.frames = 0
        self.nbytes = 0
        self.rem = 0  # payload bytes of the current frame still to come
        self.hdr = b""  # a frame header split across two reads
        self.cap: bytearray | None = None  # the part of the current payload we keep
        self.cap_kind = 0  # 0 nothing, 1 welcome head, 2 ops frame, 3 close frame
        self.last_ops: bytes | None = None
        self.welcome_head: bytes | None = None
        self.welcome_time: float | None = None
        self.connect_start = 0.0
        self.connect_end = 0.0
        self.close_code: int | None = None
        self.error: str | None = None
        self.state = "new"  # new, connecting, live, closed, failed

    def feed(self, data: bytes) -> None:
        self.nbytes += len(data)
        i, n = 0, len(data)
        if self.hdr:
            data = self.hdr + data
            self.hdr = b""
            n = len(data)
        while True:
            if self.rem:
                take = min(self.rem, n - i)
                if self.cap is not None:
                    self.cap += data[i : i + take]
                i += take
                self.rem -= take
                if self.rem:
                    return
                self._frame_done()
            if i >= n:
                return
            if n - i < 2:
                self.hdr = data[i:]
                return
            b0 = data[i]
            ln = data[i + 1] & 0x7F
            if ln < 126:
                i += 2
            elif ln == 126:
                if n - i < 4:
                    self.hdr = data[i:]
                    return
                ln = int.from_bytes(data[i + 2 : i + 4], "big")
                i += 4
            else:
                if n - i < 10:
                    self.hdr = data[i:]
                    return
                ln = int.from_bytes(data[i + 2 : i + 10], "big")
                i += 10
            self.frames += 1
            opcode = b0 & 0x0F
            self.cap = None
            self.cap_kind = 0
            if self.frames == 1:
                self.cap_kind = 1  # the welcome: keep its head (it carries the version)
            elif opcode == wire.OP_TEXT and (n - i < len(OPS_PREFIX) or data.startswith(OPS_PREFIX, i)):
                self.cap_kind = 2
            elif opcode == wire.OP_CLOSE:
                self.cap_kind = 3
            if self.cap_kind:
                self.cap = bytearray()
            self.rem = ln
            if ln == 0:
                self._frame_done()

    def _frame_done(self) -> None:
        cap, kind = self.cap, self.cap_kind
        self.cap = None
        if kind == 1:
            self.welcome_time = wire.now()
            self.welcome_head = bytes(cap[:512]) if cap is not None else b""
        elif kind == 2 and cap is not None and cap.startswith(OPS_PREFIX):
            self.last_ops = bytes(cap)
        elif kind == 3:
            self.close_code = wire.close_code(bytes(cap or b""))
            self.state = "closed"

    def max_version(self) -> int:
        """The highest version this viewer has seen: its last ops frame, else its welcome."""
        if self.last_ops is not None:
            ops = orjson.loads(self.last_ops)["ops"]
            return int(ops[-1]["v"])
        if self.welcome_head:
            m = VERSION_RE.search(self.welcome_head)
            if m:
                return int(m.group(1))
        return -1


async def run_viewer(
    v: RawViewer, cfg: dict[str, Any], token: str, start_at: float, limiter: trio.CapacityLimiter
) -> None:
    await trio.sleep(max(0.0, start_at - wire.now()))
    v.state = "connecting"
    async with limiter:
        v.connect_start = wire.now()
        try:
            sock, rest = await wire.connect(cfg["port"], cfg["notebook"], token)
        except wire.WireError as exc:
            v.state, v.error = "failed", str(exc)
            return
        v.connect_end = wire.now()
    v.sock = sock
    v.state = "live"
    if rest:
        v.feed(rest)
    while v.state == "live":
        data = await wire.recv(sock)
        if not data:
            v.state = "closed"
            break
        v.feed(data)


def settled(v: RawViewer) -> bool:
    """Connected and welcomed, or given up."""
    return v.state in ("failed", "closed") or (v.state == "live" and v.welcome_time is not None)


def _all_reached(viewers: list[RawViewer], head: int) -> bool:
    """Every live viewer has seen version `head`."""
    return all(v.state != "live" or v.max_version() >= head for v in viewers)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": s[-1]}


def summary(viewers: list[RawViewer]) -> dict[str, Any]:
    welcome_ms = [(v.welcome_time - v.connect_start) * 1000 for v in viewers if v.welcome_time is not None]
    errors: dict[str, int] = {}
    for v in viewers:
        if v.error:
            errors[v.error] = errors.get(v.error, 0) + 1
    codes: dict[str, int] = {}
    for v in viewers:
        if v.state == "closed":
            codes[str(v.close_code)] = codes.get(str(v.close_code), 0) + 1
    return {
        "viewers": len(viewers),
        "live": sum(v.state == "live" for v in viewers),
        "failed": sum(v.state == "failed" for v in viewers),
        "disconnected": sum(v.state == "closed" for v in viewers),
        "close_codes": codes,
        "errors": errors,
        "welcomed": len(welcome_ms),
        "welcome_ms": {
            k: (round(x, 2) if x is not None else None) for k, x in percentiles(welcome_ms).items()
        },
        "frames": sum(v.frames for v in viewers),
        "bytes": sum(v.nbytes for v in viewers),
    }


async def main() -> None:
    cfg = load_config()
    tokens: list[str] = cfg["tokens"]
    viewers = [RawViewer(i) for i in range(len(tokens))]
    emit("started")
    async with trio.open_nursery() as nursery:
        while True:
            command = await next_command()
            cmd = command["cmd"]
            if cmd == "connect":
                # spread > 0: start times uniformly spread over `spread` seconds (class starts);
                # else as fast as `concurrency` parallel handshakes allow.
                spread = float(command.get("spread", 0))
                rnd = random.Random(cfg.get("seed", 1))
                t0 = wire.now()
                starts = (
                    sorted(t0 + rnd.uniform(0, spread) for _ in viewers) if spread else [t0] * len(viewers)
                )
                limiter = trio.CapacityLimiter(int(command.get("concurrency", 64)) if not spread else 10**6)
                for v, token, start in zip(viewers, tokens, starts, strict=True):
                    nursery.start_soon(run_viewer, v, cfg, token, start, limiter)
                with trio.move_on_after(float(command.get("timeout", 60))):
                    await wire.wait_until(lambda: all(settled(v) for v in viewers), 0.01)
                welcome_list = [
                    round((v.welcome_time - v.connect_start) * 1000, 3)
                    for v in viewers
                    if v.welcome_time is not None
                ]
                emit("ready", t_start=t0, t_ready=wire.now(), welcome_list=welcome_list, **summary(viewers))
            elif cmd == "stats":
                emit("stats", t=wire.now(), **summary(viewers))
            elif cmd == "check":
                head = int(command["head"])
                with trio.move_on_after(float(command.get("timeout", 15))):
                    await wire.wait_until(
                        functools.partial(_all_reached, viewers, head),
                        0.05,
                    )
                seen = [v.max_version() for v in viewers]
                emit(
                    "check",
                    head=head,
                    saw_head=sum(1 for s in seen if s == head),
                    behind=sum(1 for s in seen if 0 <= s < head),
                    ahead=sum(1 for s in seen if s > head),
                    min_seen=min(seen) if seen else None,
                    **summary(viewers),
                )
            elif cmd == "quit":
                break
        nursery.cancel_scope.cancel()
    bye = wire.close_frame(1000)
    for v in viewers:
        if v.sock is not None:
            try:
                v.sock.send(bye)
            except OSError:
                pass
            wire.close_sock(v.sock)


if __name__ == "__main__":
    trio.run(main)
