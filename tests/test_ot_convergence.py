"""Convergence: a server and several clients with the classic in-flight/pending state machine.

The server transforms each incoming op against the committed ops after its base one at a time
(op_first=False), dedupes by (client, seq) and broadcasts. Clients send one op at a time, keep
the rest pending (never composed), transform incoming ops past in-flight then pending
(op_first=True for the incoming op) and take their own op coming back as the ack. Messages are
delivered in random order per direction (FIFO per connection); clients disconnect (losing what
was in transit either way), reconnect with `since` and resubmit their unacknowledged op, either
as transformed so far (base = their version) or as originally sent (original base). A "kernel"
commits server components at the head. At the end every replica equals the server document,
every marker inserted by a client is present exactly once, and no op was applied twice.
"""

from __future__ import annotations

import random
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401
from engine.ot.components import SERVER_KINDS, Op, apply_op, transform_op
from engine.ot.model import Notebook
from engine.ot.text import normalize_text
from tests.hypothesis_profiles import examples
from tests.test_ot_helpers import MARKER, rand_component, rand_notebook, rand_op, rand_text, state

Message = tuple[Any, ...]


def safe_splice(rnd: random.Random, source: str, marker: str) -> list[Any]:
    """Insert `marker` (with some filler) somewhere not inside another marker; delete only filler."""
    units: list[tuple[str, bool]] = []
    for part in re.split("(«[^»]*»)", source):
        if part.startswith("«"):
            units.append((part, True))
        else:
            units.extend((ch, False) for ch in part)
    at = rnd.randint(0, len(units))
    ops: list[Any] = []
    for i, (unit, is_marker) in enumerate(units):
        if i == at:
            ops.append(rand_text(rnd, 2) + marker + rand_text(rnd, 2))
        ops.append({"d": len(unit)} if not is_marker and rnd.random() < 0.15 else len(unit))
    if at == len(units):
        ops.append(marker)
    return normalize_text(ops)


USER_WEIGHTED = ["text"] * 5 + [
    "cell_insert", "cell_delete", "cell_restore", "cell_move", "cell_type", "meta_set", "outputs_clear",
]  # fmt: skip


@dataclass
class Server:
    nb: Notebook
    log: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[tuple[str, int], int] = field(default_factory=dict)
    conns: dict[str, deque[Message]] = field(default_factory=dict)
    commits: Counter[tuple[str, int]] = field(default_factory=Counter)
    kernel_seq: int = 0

    def connect(self, cid: str, since: int) -> deque[Message]:
        q: deque[Message] = deque([("welcome", len(self.log), list(self.log[since:]))])
        self.conns[cid] = q
        return q

    def submit(self, cid: str, seq: int, base: int, op: Op) -> None:
        if (cid, seq) in self.seen:
            if cid in self.conns:
                self.conns[cid].append(("ack", seq, self.seen[(cid, seq)]))
            return
        for entry in self.log[base:]:  # one at a time, never composed
            op = transform_op(op, entry["op"], op_first=False)
        v = len(self.log) + 1
        self.nb = apply_op(self.nb, op, v)
        entry = {"v": v, "client": cid, "seq": seq, "op": op}
        self.log.append(entry)
        self.seen[(cid, seq)] = v
        self.commits[(cid, seq)] += 1
        for q in self.conns.values():
            q.append(("ops", [entry]))

    def kernel(self, rnd: random.Random) -> None:
        op = rand_op(rnd, self.nb, sorted(SERVER_KINDS), "k")
        self.kernel_seq += 1
        self.submit("kernel", self.kernel_seq, len(self.log), op)


@dataclass
class Client:
    cid: str
    doc: Notebook
    version: int = 0
    inflight: dict[str, Any] | None = None
    pending: list[Op] = field(default_factory=list)
    next_seq: int = 1
    inbox: deque[Message] | None = None
    outbox: deque[Message] = field(default_factory=deque)
    edits: int = 0
    markers: list[str] = field(default_factory=list)

    def edit(self, rnd: random.Random) -> None:
        op: Op = []
        doc = self.doc
        for _ in range(rnd.randint(1, 3)):
            kind = rnd.choice(USER_WEIGHTED)
            marker = f"«{self.cid}.{len(self.markers)}»"
            if kind == "cell_insert":
                c: dict[str, Any] | None = {
                    "t": "cell_insert",
                    "id": f"{self.cid}-{self.edits}-{len(op)}",
                    "pos": rnd.choice(["V", "k", "kV", "0"]),
                    "cell": {"cell_type": rnd.choice(["code", "markdown"]), "source": marker},
                }
                self.markers.append(marker)
            elif kind == "text":
                live = sorted(doc.cells)
                if not live:
                    continue
                cid = rnd.choice(live)
                c = {"t": "text", "id": cid, "ops": safe_splice(rnd, doc.cells[cid].source, marker)}
                self.markers.append(marker)
            else:
                c = rand_component(rnd, doc, kind, "unused")
            if c is None:
                continue
            doc = apply_op(doc, [c], self.version)
            op.append(c)
        self.edits += 1
        self.doc = doc
        self.pending.append(op)
        self.flush()

    def flush(self) -> None:
        if self.inbox is not None and self.inflight is None and self.pending:
            op = self.pending.pop(0)
            self.inflight = {"seq": self.next_seq, "op": op, "orig_op": op, "orig_base": self.version}
            self.outbox.append(("op", self.next_seq, self.version, op))
            self.next_seq += 1

    def receive(self, msg: Message) -> None:
        if msg[0] == "welcome":
            for entry in msg[2]:
                self.apply_entry(entry)
            assert self.version == msg[1]
        elif msg[0] == "ops":
            for entry in msg[1]:
                self.apply_entry(entry)
        else:  # ("ack", seq, v): a resubmit of an op already committed, seen in the welcome
            assert self.inflight is None or self.inflight["seq"] != msg[1]
            assert msg[2] <= self.version

    def apply_entry(self, entry: dict[str, Any]) -> None:
        assert entry["v"] == self.version + 1, "ops must come in order, without gaps or duplicates"
        if entry["client"] == self.cid:
            assert self.inflight is not None and self.inflight["seq"] == entry["seq"]
            self.inflight = None
            self.version = entry["v"]
            self.flush()
            return
        s = entry["op"]
        if self.inflight is not None:
            mine = self.inflight["op"]
            self.inflight["op"] = transform_op(mine, s, op_first=False)
            s = transform_op(s, mine, op_first=True)
        pending = []
        for p in self.pending:
            pending.append(transform_op(p, s, op_first=False))
            s = transform_op(s, p, op_first=True)
        self.pending = pending
        self.doc = apply_op(self.doc, s, entry["v"])
        self.version = entry["v"]

    def disconnect(self, server: Server, rnd: random.Random) -> None:
        server.conns.pop(self.cid, None)
        self.inbox = None
        # Whatever was in transit to the server may or may not have arrived.
        for _ in range(rnd.randint(0, len(self.outbox))):
            _, seq, vbase, op = self.outbox.popleft()
            server.submit(self.cid, seq, vbase, op)
        self.outbox.clear()

    def reconnect(self, server: Server, rnd: random.Random) -> None:
        self.inbox = server.connect(self.cid, self.version)
        if self.inflight is not None:
            inf = self.inflight
            if rnd.random() < 0.5:
                self.outbox.append(("op", inf["seq"], self.version, inf["op"]))
            else:
                self.outbox.append(("op", inf["seq"], inf["orig_base"], inf["orig_op"]))
        else:
            self.flush()


def converged(doc: Notebook) -> str:
    # `created` is the commit version, which a replica cannot know for its own inserts (and the
    # welcome DOC does not carry it): compare everything else.
    for cell in doc.cells.values():
        cell.created = 0
    return state(doc)


def simulate(seed: int, n_clients: int, steps: int) -> None:
    rnd = random.Random(seed)
    base = rand_notebook(rnd)
    server = Server(base)
    clients = [Client(f"u{i}", base) for i in range(n_clients)]
    for c in clients:
        c.inbox = server.connect(c.cid, 0)
    for _ in range(steps):
        c = rnd.choice(clients)
        r = rnd.random()
        if r < 0.3:
            c.edit(rnd)
        elif r < 0.55:
            if c.inbox is not None and c.outbox:
                _, seq, vbase, op = c.outbox.popleft()
                server.submit(c.cid, seq, vbase, op)
        elif r < 0.85:
            if c.inbox:
                c.receive(c.inbox.popleft())
        elif r < 0.9:
            server.kernel(rnd)
        elif r < 0.95:
            if c.inbox is not None:
                c.disconnect(server, rnd)
        elif c.inbox is None:
            c.reconnect(server, rnd)
    # Quiesce: everyone reconnects, then deliver everything until nothing moves.
    for c in clients:
        if c.inbox is None:
            c.reconnect(server, rnd)
    moved = True
    while moved:
        moved = False
        for c in clients:
            assert c.inbox is not None
            while c.outbox:
                _, seq, vbase, op = c.outbox.popleft()
                server.submit(c.cid, seq, vbase, op)
                moved = True
            while c.inbox:
                c.receive(c.inbox.popleft())
                moved = True
    expected = converged(server.nb)
    sources = "".join(cell.source for cell in server.nb.cells.values())
    found = Counter(MARKER.findall(sources))
    for c in clients:
        assert c.inflight is None and not c.pending
        assert c.version == len(server.log)
        assert converged(c.doc) == expected
        for m in c.markers:
            assert found[m] == 1, m
    assert set(found) == {m for c in clients for m in c.markers}
    assert all(n == 1 for n in server.commits.values())
    assert sum(c.next_seq - 1 for c in clients) + server.kernel_seq == len(server.log)


@settings(max_examples=examples(0.1))
@given(st.integers(0, 2**32 - 1), st.integers(2, 4))
def test_convergence_random_schedules(seed: int, n_clients: int) -> None:
    simulate(seed, n_clients, steps=80)


def test_convergence_long_run() -> None:
    simulate(12345, 5, steps=3000)
