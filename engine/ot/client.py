"""The client half of the sync protocol as pure state: what a browser editor does.

At most one op is in flight; later local edits wait as pending ops. Every committed op from the
server is applied in version order: the client's own in-flight op coming back is its ack;
anyone else's op is transformed against the in-flight and pending ops (it was ordered first)
and they against it, one at a time. The test client and the load generator both use this, and
the embed page implements the same machine.
"""

from __future__ import annotations

from typing import Any

from engine.ot.components import Op, apply_op, transform_op
from engine.ot.model import Notebook


class ClientDoc:
    """A replica plus the ops this client has not seen acknowledged yet."""

    def __init__(self, notebook: Notebook, version: int, client: str) -> None:
        self.notebook = notebook
        self.version = version
        self.client = client
        self.seq = 0
        self.inflight: tuple[int, Op] | None = None
        self.pending: list[tuple[int, Op]] = []

    @property
    def settled(self) -> bool:
        """Nothing of ours is waiting for an ack."""
        return self.inflight is None and not self.pending

    def edit(self, op: Op) -> tuple[int, int, Op] | None:
        """Apply a local edit now. Returns `(seq, base, op)` to send, or None while one is in flight."""
        self.notebook = apply_op(self.notebook, op, self.version + 1)
        self.seq += 1
        self.pending.append((self.seq, op))
        return self.next_to_send()

    def next_to_send(self) -> tuple[int, int, Op] | None:
        """Promote the oldest pending op when nothing is in flight; returns what to send."""
        if self.inflight is not None or not self.pending:
            return None
        self.inflight = self.pending.pop(0)
        return self.inflight[0], self.version, self.inflight[1]

    def receive(self, entry: dict[str, Any]) -> bool:
        """Apply one committed `ops` entry; True when it was the ack of our in-flight op.

        Raises ValueError when the entry is not exactly the next version (a gap or duplicate).
        """
        if entry["v"] != self.version + 1:
            raise ValueError(f"expected version {self.version + 1}, got {entry['v']}")
        self.version = entry["v"]
        if self.inflight is not None and entry["client"] == self.client and entry["seq"] == self.inflight[0]:
            self.inflight = None
            return True
        op: Op = entry["op"]
        mine = ([self.inflight] if self.inflight is not None else []) + self.pending
        transformed: list[tuple[int, Op]] = []
        for seq, own in mine:
            op, own = transform_op(op, own, op_first=True), transform_op(own, op, op_first=False)
            transformed.append((seq, own))
        if self.inflight is not None:
            self.inflight, self.pending = transformed[0], transformed[1:]
        else:
            self.pending = transformed
        self.notebook = apply_op(self.notebook, op, self.version)
        return False
