"""The authoritative in-memory notebook of one room: head document, history window, dedupe table.

`Document.submit` is the whole server-side OT step of contract §5/§8, as a pure synchronous
function of its inputs: dedupe by `(user, client, seq)`, check the base, transform the op against
every committed op after its base one at a time, apply, commit. It does no I/O: the room makes the
committed records durable before anyone sees them.

Everything the document remembers about clients (dedupe entries, last seqs, which user owns a
client id) is derived from the retained window and dropped with it, so memory stays flat however
many client ids come and go, and a restart rebuilds exactly the same tables from the log's tail.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.ot.components import OpError, apply_op, referenced_cells, transform_op
from engine.ot.model import Notebook
from engine.records import CommittedOp, Component
from engine.sizes import ContentMeter

# Client ids the server itself commits under. `~` is outside the client-id alphabet, so no
# WebSocket client can ever claim one of these and collide in the dedupe table.
API_CLIENT = "~api"
KERNEL_CLIENT = "~kernel"


class Rejected(Exception):
    """An op the document will not commit; the client must resync. `code` is snake_case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A resubmit of an op committed earlier at version `v`: acknowledge, change nothing."""

    v: int


class Document:
    """Head state plus the retained window of committed ops.

    `window` bounds both the transform window (how old a base may be) and the resume window
    (how far back `since` works); it must be at least 1,000 (contract §8). `max_bytes` caps the
    content size (`engine.sizes`): an op that would grow it beyond is rejected.
    """

    def __init__(
        self,
        notebook: Notebook,
        version: int,
        tail: list[CommittedOp],
        window: int = 2000,
        max_bytes: int | None = None,
    ) -> None:
        if tail and tail[-1].v != version:
            raise ValueError("the tail must end at the head version")
        self.notebook = notebook
        self.max_bytes = max_bytes
        self.size = ContentMeter(notebook)
        self.version = version
        self.window = window
        self.history: deque[CommittedOp] = deque()
        # Keyed by (user, client), only for ops in `history`: {seq: v}, and the highest seq.
        self._seen: dict[tuple[str, str], dict[int, int]] = {}
        self._last_seq: dict[tuple[str, str], int] = {}
        # client id -> the user who used it, for client ids with ops in `history` (contract §8:
        # a client id belongs to the user who first used it). Server clients (`~…`) are shared.
        self._owner: dict[str, str] = {}
        for record in tail[-window:]:
            self._remember(record)

    # -- queries ---------------------------------------------------------------------------

    @property
    def oldest_base(self) -> int:
        """The oldest base (and `since`) the window can still serve."""
        return self.history[0].v - 1 if self.history else self.version

    def ops_since(self, since: int) -> list[CommittedOp] | None:
        """Committed ops with `v > since` from the window, or None when `since` is outside it."""
        if since < self.oldest_base or since > self.version:
            return None
        if since == self.version:
            return []
        start = since - self.oldest_base
        return [self.history[i] for i in range(start, len(self.history))]

    def next_seq(self, client: str, user: str) -> int:
        """The seq a server-side client should use next for `user`."""
        return self._last_seq.get((user, client), 0) + 1

    def owner(self, client: str) -> str | None:
        """The user whose ops under `client` are in the retained window, if any."""
        return self._owner.get(client)

    @property
    def dedupe_entries(self) -> int:
        """How many (user, client) keys the dedupe tables hold (at most the window's op count)."""
        return len(self._last_seq)

    # -- the OT step -----------------------------------------------------------------------

    def submit(
        self, op: list[Component], base: int, client: str, seq: int, user: str, now_ms: int
    ) -> CommittedOp | Duplicate:
        """Commit `op` made against version `base`, or return `Duplicate` for a resubmit.

        Raises `Rejected` (and changes nothing) for a client id that another user's retained
        ops hold (`client_taken`), a bad seq, a base outside the window, an op naming cells its
        author could not have seen at `base`, an op invalid at head, or one that would grow the
        content past `max_bytes` (`notebook_too_large`). A resubmit whose original left the
        window is refused as `base_too_old` (its base is older than the window too), never
        committed twice.
        """
        owner = self._owner.get(client)
        if owner is not None and owner != user:
            raise Rejected("client_taken", f"client id {client!r} belongs to another user; reconnect")
        key = (user, client)
        last = self._last_seq.get(key)
        if last is not None and seq <= last:
            v = self._seen.get(key, {}).get(seq)
            if v is None:
                raise Rejected("base_too_old", f"op {client}/{seq} is older than the server's window; resync")
            return Duplicate(v)
        if last is not None and seq != last + 1:
            raise Rejected("bad_seq", f"expected seq {last + 1} for client {client}, got {seq}")
        if base > self.version:
            raise Rejected("bad_base", f"base {base} is ahead of the head version {self.version}")
        if base < self.oldest_base:
            raise Rejected(
                "base_too_old", f"base {base} is older than the transform window (oldest {self.oldest_base})"
            )
        cells = self.notebook.cells
        for cell_id in referenced_cells(op):
            cell = cells.get(cell_id)
            if cell is None or cell.created > base:
                raise Rejected("unknown_cell", f"cell {cell_id!r} does not exist at version {base}")
        others_seen = False
        for i in range(base - self.oldest_base, len(self.history)):
            committed = self.history[i]
            if committed.client == client and committed.user == user:
                # A pipelined op: the author made `op` on top of its own earlier op, so that op
                # is already in its context. That holds only while nobody else's op came first.
                if others_seen:
                    raise Rejected(
                        "pipeline_conflict",
                        f"op {client}/{seq} was pipelined behind an op that raced another editor; resync",
                    )
                continue
            others_seen = True
            op = transform_op(op, committed.op, op_first=False)
        try:
            notebook = apply_op(self.notebook, op, self.version + 1)
        except OpError as exc:
            raise Rejected(exc.code, exc.message) from None
        size = self.size.measure(notebook)
        if self.max_bytes is not None and size > self.max_bytes and size > self.size.total:
            raise Rejected(
                "notebook_too_large",
                f"the op would make the notebook {size} bytes, over the limit of {self.max_bytes}",
            )
        self.size.accept(notebook)
        record = CommittedOp(v=self.version + 1, client=client, seq=seq, user=user, time=now_ms, op=op)
        self.notebook = notebook
        self.version = record.v
        self._remember(record)
        return record

    def commit_local(self, op: list[Component], client: str, user: str, now_ms: int) -> CommittedOp:
        """Commit a server-made op at head (HTTP replace/revert, kernel output). Raises `Rejected`."""
        result = self.submit(op, self.version, client, self.next_seq(client, user), user, now_ms)
        assert isinstance(result, CommittedOp)
        return result

    def _remember(self, record: CommittedOp) -> None:
        self.history.append(record)
        key = (record.user, record.client)
        self._seen.setdefault(key, {})[record.seq] = record.v
        if record.seq > self._last_seq.get(key, 0):
            self._last_seq[key] = record.seq
        if not record.client.startswith("~"):
            self._owner.setdefault(record.client, record.user)
        while len(self.history) > self.window:
            self._forget(self.history.popleft())
        self.version = record.v

    def _forget(self, old: CommittedOp) -> None:
        """Drop what the window remembered of `old`; a client with no op left is forgotten."""
        key = (old.user, old.client)
        seqs = self._seen.get(key)
        if seqs is None:
            return
        seqs.pop(old.seq, None)
        if not seqs:
            del self._seen[key]
            self._last_seq.pop(key, None)
            if self._owner.get(old.client) == old.user:
                del self._owner[old.client]
