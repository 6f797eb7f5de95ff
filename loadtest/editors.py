"""Editors and probe viewers in one trio process: the clients that do real work.

Editors type: Poisson-paced ops (mostly short inserts into their own cell, some into shared
cells so that edits are concurrent, some deletes, occasionally a move, a type change, a
metadata set or an output clear), each with the client half of the OT protocol (at most one op
in flight, pending ops transformed against incoming ones, the own op coming back is the ack).
Every op's generation and send times are kept in a table keyed by `(client, seq)`, which the
server echoes in every `ops` entry.

Probes are viewers that decode every frame, check that versions arrive without gaps, apply
every op to a replica and timestamp every entry the moment its bytes are read: latency =
probe receive time - editor send time (and - generation time), for every op at every probe.
Editors and probes share one process, so both ends use the same clock.

    python -m loadtest.editors CONFIG.json   (driven by loadtest.bench over stdin/stdout)
"""

from __future__ import annotations

import functools
import math
import random
import socket
from typing import Any

import orjson
import trio

from engine.ot.client import ClientDoc
from engine.ot.components import apply_op
from engine.ot.model import Notebook, notebook_from_doc, ordered_cells
from engine.ot.poskeys import key_between
from loadtest import wire
from loadtest.ctl import emit, load_config, next_command

WORD_CHARS = "abcdefghijklmnopqrstuvwxyz     ()=+._\n"


class Replica:
    """A sync connection with a local replica of the notebook (shared by editors and probes)."""

    def __init__(self, name: str, role: str, cfg: dict[str, Any], token: str) -> None:
        self.name = name
        self.role = role
        self.cfg = cfg
        self.token = token
        self.sock: socket.socket | None = None
        self.reader = wire.FrameReader()
        self.notebook: Notebook | None = None
        self.version = 0
        self.client = ""
        self.state = "new"  # new, live, closed, failed
        self.close_code: int | None = None
        self.error: str | None = None
        self.gaps = 0  # ops entries that did not carry exactly version + 1
        self.frames = 0
        self.ops_seen = 0

    async def connect(self, client: str | None = None) -> None:
        try:
            self.sock, rest = await wire.connect(
                self.cfg["port"], self.cfg["notebook"], self.token, client=client
            )
            welcome = None
            frames = self.reader.feed(rest)
            while not frames:
                data = await wire.recv(self.sock)
                if not data:
                    raise wire.WireError("closed before the welcome")
                frames = self.reader.feed(data)
            opcode, payload = frames[0]
            if opcode != wire.OP_TEXT:
                raise wire.WireError(f"first frame has opcode {opcode}", wire.close_code(payload))
            welcome = orjson.loads(payload)
            if welcome.get("type") != "welcome":
                raise wire.WireError(f"first message is {welcome.get('type')}: {payload[:200]!r}")
        except wire.WireError as exc:
            self.state, self.error = "failed", str(exc)
            return
        self.client = welcome["client"]
        self.version = welcome["version"]
        self.notebook = notebook_from_doc(welcome["notebook"])
        self.state = "live"
        self.handle_frames(frames[1:], wire.now())

    async def read_loop(self) -> None:
        assert self.sock is not None
        while self.state == "live":
            data = await wire.recv(self.sock)
            t = wire.now()
            if not data:
                self.state = "closed"
                break
            self.handle_frames(self.reader.feed(data), t)
            await self.after_frames()

    def handle_frames(self, frames: list[tuple[int, bytes]], t: float) -> None:
        for opcode, payload in frames:
            self.frames += 1
            if opcode == wire.OP_CLOSE:
                self.close_code = wire.close_code(payload)
                self.state = "closed"
                return
            if opcode != wire.OP_TEXT:
                continue
            message = orjson.loads(payload)
            kind = message["type"]
            if kind == "ops":
                for entry in message["ops"]:
                    self.incoming(entry, t)
            elif kind in ("reject", "error"):
                self.on_problem(message)

    def incoming(self, entry: dict[str, Any], t: float) -> None:
        if entry["v"] != self.version + 1:
            self.gaps += 1
        self.version = entry["v"]
        self.ops_seen += 1
        assert self.notebook is not None
        self.notebook = apply_op(self.notebook, entry["op"], self.version)

    def on_problem(self, message: dict[str, Any]) -> None:
        self.error = orjson.dumps(message).decode()[:300]

    async def after_frames(self) -> None:
        pass

    def cells(self) -> list[tuple[str, str, str]]:
        assert self.notebook is not None
        return [(c.id, c.cell_type, c.source) for c in ordered_cells(self.notebook)]

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.send(wire.close_frame(1000))
            except OSError:
                pass
            wire.close_sock(self.sock)
            self.sock = None


class Probe(Replica):
    """A viewer that timestamps every op entry it reads."""

    def __init__(self, name: str, cfg: dict[str, Any], token: str, table: SendTable) -> None:
        super().__init__(name, "viewer", cfg, token)
        self.table = table

    def incoming(self, entry: dict[str, Any], t: float) -> None:
        super().incoming(entry, t)
        self.table.observe(entry["client"], entry["seq"], t)


class SendTable:
    """(client, seq) -> generation and send times, and the latencies observed by probes."""

    def __init__(self) -> None:
        self.generated: dict[tuple[str, int], float] = {}
        self.sent: dict[tuple[str, int], float] = {}
        self.wire_ms: list[float] = []  # probe receive - editor send
        self.edit_ms: list[float] = []  # probe receive - edit generated (includes client queueing)
        self.unknown = 0

    def observe(self, client: str, seq: int, t: float) -> None:
        key = (client, seq)
        sent = self.sent.get(key)
        if sent is None:
            self.unknown += 1
            return
        self.wire_ms.append((t - sent) * 1000)
        self.edit_ms.append((t - self.generated[key]) * 1000)


class Editor(Replica):
    """A typing student: Poisson-paced ops with the client-side OT state machine."""

    def __init__(
        self,
        name: str,
        cfg: dict[str, Any],
        token: str,
        table: SendTable,
        own: str,
        shared: list[str],
        seed: int,
    ) -> None:
        super().__init__(name, "editor", cfg, token)
        self.table = table
        self.own = own
        self.shared = shared
        self.rnd = random.Random(seed)
        self.doc: ClientDoc | None = None  # the client OT state machine, once welcomed
        self.lock = trio.Lock()
        self.generated = 0
        self.acked = 0
        self.rejects = 0
        self.ack_ms: list[float] = []
        self.kinds: dict[str, int] = {}
        self.broken = False

    # -- OT client ----------------------------------------------------------------------------

    def client_doc(self) -> ClientDoc:
        if self.doc is None:
            assert self.notebook is not None
            self.doc = ClientDoc(self.notebook, self.version, self.client)
        return self.doc

    def incoming(self, entry: dict[str, Any], t: float) -> None:
        doc = self.client_doc()
        self.ops_seen += 1
        try:
            acked = doc.receive(entry)
        except ValueError:
            self.gaps += 1
            self.broken = True
            return
        self.version, self.notebook = doc.version, doc.notebook
        if acked:
            self.ack_ms.append((t - self.table.sent[(self.client, doc.seq - len(doc.pending))]) * 1000)
            self.acked += 1

    def on_problem(self, message: dict[str, Any]) -> None:
        super().on_problem(message)
        if message["type"] == "reject":
            self.rejects += 1
            self.broken = True  # a real client would resync; the bench just stops this editor

    async def after_frames(self) -> None:
        if not self.broken:
            await self.send_op(self.client_doc().next_to_send())

    async def send_op(self, outgoing: tuple[int, int, list[dict[str, Any]]] | None) -> None:
        if outgoing is None:
            return
        seq, base, op = outgoing
        data = wire.masked_frame(orjson.dumps({"type": "op", "seq": seq, "base": base, "op": op}))
        async with self.lock:
            assert self.sock is not None
            self.table.sent[(self.client, seq)] = wire.now()
            await wire.send_all(self.sock, data)

    async def submit(self, op: list[dict[str, Any]]) -> None:
        doc = self.client_doc()
        outgoing = doc.edit(op)
        self.notebook = doc.notebook
        self.generated += 1
        self.table.generated[(self.client, doc.seq)] = wire.now()
        await self.send_op(outgoing)

    @property
    def settled(self) -> bool:
        return self.doc is None or self.doc.settled

    @property
    def seq(self) -> int:
        return self.doc.seq if self.doc is not None else 0

    # -- what a student types -----------------------------------------------------------------

    def word(self) -> str:
        return "".join(self.rnd.choice(WORD_CHARS) for _ in range(self.rnd.randint(1, 4)))

    def make_op(self) -> tuple[str, list[dict[str, Any]]]:
        assert self.notebook is not None
        r = self.rnd.random()
        own = self.notebook.cells[self.own]
        if r < 0.15 and self.shared:
            cell = self.notebook.cells[self.rnd.choice(self.shared)]
            at = self.rnd.randint(0, len(cell.source))
            return "shared_insert", [
                {"t": "text", "id": cell.id, "ops": [at, self.word()] if at else [self.word()]}
            ]
        if r < 0.90 or (r < 0.96 and len(own.source) < 8):
            at = self.rnd.randint(0, len(own.source))
            return "insert", [{"t": "text", "id": own.id, "ops": [at, self.word()] if at else [self.word()]}]
        if r < 0.96:
            n = self.rnd.randint(1, 3)
            at = self.rnd.randint(0, len(own.source) - n)
            return "delete", [{"t": "text", "id": own.id, "ops": [at, {"d": n}] if at else [{"d": n}]}]
        other = self.rnd.random()
        if other < 0.4:
            return "meta_set", [
                {"t": "meta_set", "id": own.id, "key": "bench", "value": {"seq": self.seq + 1}}
            ]
        if other < 0.6:
            cells = ordered_cells(self.notebook)
            j = self.rnd.randrange(len(cells) - 1)
            try:
                pos = key_between(cells[j].pos, cells[j + 1].pos)
            except ValueError:
                pos = cells[j].pos
            return "cell_move", [{"t": "cell_move", "id": own.id, "pos": pos}]
        if other < 0.8:
            value = "markdown" if own.cell_type == "code" else "code"
            return "cell_type", [{"t": "cell_type", "id": own.id, "value": value}]
        return "outputs_clear", [{"t": "outputs_clear", "id": own.id}]

    async def type_for(self, t_go: float, duration: float, rate: float, presence: float) -> None:
        """Poisson arrivals at `rate` per second from a random offset until `t_go + duration`."""
        t = t_go + self.rnd.uniform(0, 1 / rate)
        end = t_go + duration
        while t < end and self.state == "live" and not self.broken:
            await trio.sleep(max(0.0, t - wire.now()))
            kind, op = self.make_op()
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            await self.submit(op)
            if self.rnd.random() < presence and kind in ("insert", "delete"):
                at = len(self.notebook.cells[self.own].source) if self.notebook else 0
                cursor = {"cell": self.own, "anchor": at, "head": at}
                data = wire.masked_frame(orjson.dumps({"type": "presence", "cursor": cursor}))
                async with self.lock:
                    assert self.sock is not None
                    await wire.send_all(self.sock, data)
            t += self.rnd.expovariate(rate)


def _all_reached(replicas: list[Replica], head: int) -> bool:
    """Every live replica has seen version `head`."""
    return all(r.state != "live" or r.version >= head for r in replicas)


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))], 3)

    return {
        "n": len(s),
        "p50": q(0.5),
        "p95": q(0.95),
        "p99": q(0.99),
        "max": round(s[-1], 3),
        "mean": round(sum(s) / len(s), 3),
    }


async def main() -> None:
    cfg = load_config()
    table = SendTable()
    probes = [Probe(f"probe{i}", cfg, tok, table) for i, tok in enumerate(cfg["probe_tokens"])]
    editors = [
        Editor(
            f"ed{i}", cfg, tok, table, cfg["own_cells"][i], cfg["shared_cells"], cfg.get("seed", 1) * 1000 + i
        )
        for i, tok in enumerate(cfg["editor_tokens"])
    ]
    everyone: list[Replica] = [*probes, *editors]
    emit("started")
    t_go = t_stop = 0.0
    async with trio.open_nursery() as nursery:
        while True:
            command = await next_command()
            cmd = command["cmd"]
            if cmd == "connect":
                async with trio.open_nursery() as connecting:
                    for probe in probes:
                        connecting.start_soon(probe.connect)
                    for i, e in enumerate(editors):
                        connecting.start_soon(e.connect, f"bench-ed{i}")
                for r in everyone:
                    if r.state == "live":
                        nursery.start_soon(r.read_loop)
                emit(
                    "ready",
                    live=sum(r.state == "live" for r in everyone),
                    failed=[f"{r.name}: {r.error}" for r in everyone if r.state == "failed"],
                )
            elif cmd == "go":
                duration, rate = float(command["duration"]), float(command["rate"])
                t_go = float(command.get("t_go", wire.now()))
                async with trio.open_nursery() as typing:
                    for e in editors:
                        if e.state == "live":
                            typing.start_soon(
                                e.type_for, t_go, duration, rate, float(command.get("presence", 0.5))
                            )
                t_stop = wire.now()
                with trio.move_on_after(20):  # drain: every op acknowledged
                    await wire.wait_until(
                        lambda: all(e.state != "live" or e.broken or e.settled for e in editors), 0.01
                    )
                kinds: dict[str, int] = {}
                for e in editors:
                    for k, n in e.kinds.items():
                        kinds[k] = kinds.get(k, 0) + n
                emit(
                    "done",
                    t_go=t_go,
                    t_stop=t_stop,
                    t_drained=wire.now(),
                    generated=sum(e.generated for e in editors),
                    acked=sum(e.acked for e in editors),
                    unsettled=sum(not e.settled for e in editors),
                    rejects=sum(e.rejects for e in editors),
                    kinds=kinds,
                )
            elif cmd == "check":
                head = int(command["head"])
                with trio.move_on_after(float(command.get("timeout", 15))):
                    await wire.wait_until(
                        functools.partial(_all_reached, everyone, head)
                    )
                expected = [(c["id"], c["cell_type"], c["source"]) for c in command["cells"]]
                probe_ok = [
                    p.state == "live" and p.version == head and p.cells() == expected for p in probes
                ]
                editor_ok = [
                    r.state == "live" and r.version == head and r.cells() == expected for r in editors
                ]
                sent = len(table.sent)
                emit(
                    "check",
                    head=head,
                    probes=len(probes),
                    probes_converged=sum(probe_ok),
                    editors=len(editors),
                    editors_converged=sum(editor_ok),
                    disconnected=[f"{r.name}: {r.close_code}" for r in everyone if r.state == "closed"],
                    gaps=sum(r.gaps for r in everyone),
                    errors=[f"{r.name}: {r.error}" for r in everyone if r.error][:10],
                    ops_sent=sent,
                    samples_expected=sent * sum(r.state != "failed" for r in probes),
                    latency_wire_ms=stats(table.wire_ms),
                    latency_edit_ms=stats(table.edit_ms),
                    ack_ms=stats([x for e in editors for x in e.ack_ms]),
                    unknown_entries=table.unknown,
                    t_go=t_go,
                    t_stop=t_stop,
                )
            elif cmd == "quit":
                break
        nursery.cancel_scope.cancel()
    for r in everyone:
        r.close()


if __name__ == "__main__":
    trio.run(main)
