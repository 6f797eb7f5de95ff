"""The per-notebook actor: one trio task owns a notebook's document and serialises everything.

One pass of the loop (a "tick"): take every waiting message from the bounded inbox, run the
submissions through `Document.submit`, make the whole batch durable with one `append`
(group commit: one fsync), and only then let anyone see it: acks of resubmits, answers to
HTTP calls, and the shared `ops` frame. Frames are coalesced: an op committed while the room
is quiet goes out at once; ops arriving within `coalesce` seconds of the previous frame share
the next one, so frames per second stay bounded whatever the edit rate. Joins are answered at
a frame boundary, so every member's cursor starts exactly after its welcome version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import trio

from engine import metrics
from engine.document import Document, Duplicate, Rejected
from engine.errors import Unavailable
from engine.fanout import FanoutLimits, FrameLog, Peer
from engine.ot.model import notebook_to_doc
from engine.presence import PresenceBoard
from engine.records import CommittedOp, Component
from engine.storage.base import NotebookInfo, NotebookStore, Recovered, StorageError
from protocol import (
    Ack,
    Error,
    Reject,
    ServerMessage,
    encode,
    encode_op_entry,
    ops_frame_payload,
    welcome_head,
    welcome_payload_with_ops,
    wsframe,
)

log = logging.getLogger("agora.room")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """Tunables of every room (see docs/operations.md)."""

    window: int = 2000  # retained ops: transform window and resume window (>= 1000)
    inbox_size: int = 4096  # bounded: submitters wait (back-pressure) when it is full
    max_batch: int = 512  # messages taken per tick (at most `window`)
    coalesce: float = 0.02  # seconds between ops frames while busy (<= 50 frames/s)
    presence_interval: float = 0.1  # seconds between presence frames, only when changed
    presence_grace: float = 0.05  # how long a due presence frame waits to ride with an ops frame
    idle_timeout: float = 60.0  # close the room after this long without members or calls
    call_timeout: float = 30.0  # an HTTP call waiting for the room gives up after this
    fanout: FanoutLimits = field(default_factory=FanoutLimits)


@dataclass(eq=False, slots=True)
class Member:
    """A connection attached to the room."""

    peer: Peer
    role: str  # "viewer" | "editor"
    client: str
    user: dict[str, Any]


@dataclass(slots=True)
class _Submit:
    member: Member
    seq: int
    base: int
    op: list[Component]


@dataclass(slots=True)
class _Join:
    member: Member
    since: int | None


@dataclass(slots=True)
class _Call:
    fn: Callable[[Document], Any]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _frame(message: ServerMessage) -> bytes:
    return wsframe.text_frame(encode(message))


def _encoded_entry(record: CommittedOp) -> bytes:
    """The record's `ops` entry, copied to its exact size: orjson's result sits in a ~4 KiB
    allocation whatever its length, and the room keeps one of these per retained op."""
    return bytes(memoryview(encode_op_entry(record.wire())))


class Room:
    """One open notebook. Create with the recovered state, then run `run` in a nursery."""

    def __init__(
        self,
        notebook_id: str,
        info: NotebookInfo,
        store: NotebookStore,
        recovered: Recovered,
        config: RoomConfig,
    ) -> None:
        self.id = notebook_id
        self.info = info
        self.store = store
        self.config = config
        self.doc = Document(recovered.notebook, recovered.version, recovered.tail, config.window)
        self.info.version = recovered.version
        self.members: dict[int, Member] = {}
        self.presence = PresenceBoard()
        self.frames = FrameLog(config.fanout.retain_frames)
        self.save_info: Callable[[NotebookInfo], Awaitable[None]] | None = None
        self.stopping = False
        self.deleted = False
        self.closed = trio.Event()
        self.failure: StorageError | None = None
        self._inbox_send, self._inbox = trio.open_memory_channel[_Submit | _Join | _Call](config.inbox_size)
        self._encoded: dict[int, bytes] = {}  # v -> encoded `ops` entry, for the retained window
        for record in self.doc.history:
            self._encoded[record.v] = _encoded_entry(record)
        self._unframed: list[CommittedOp] = []
        self._pending_joins: list[_Join] = []
        self._last_frame = -1e9
        self._last_presence = -1e9
        self._last_activity = trio.current_time()
        self._doc_cache: tuple[int, bytes] | None = None
        self._snapshotting = False
        self._snapshot_done = trio.Event()
        self._snapshot_version = recovered.version
        self._wait_scope: trio.CancelScope | None = None
        self._close_code = 1001
        self._close_reason = "server shutting down"

    # -- API for connections and the engine (any task) ------------------------------------------

    async def submit(self, member: Member, seq: int, base: int, op: list[Component]) -> None:
        """Queue an editor's op; waits while the inbox is full (back-pressure on that reader)."""
        await self._send(_Submit(member, seq, base, op))

    async def join(self, member: Member, since: int | None) -> None:
        """Queue a join; the welcome goes out at the next frame boundary."""
        await self._send(_Join(member, since))

    async def call(self, fn: Callable[[Document], T]) -> T:
        """Run `fn(document)` in the room task; returns once whatever it committed is durable."""
        item = _Call(fn)
        await self._send(item)
        with trio.move_on_after(self.config.call_timeout):
            await item.done.wait()
        if not item.done.is_set():
            raise Unavailable("the notebook did not answer in time", code="timeout")
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[no-any-return]

    def detach(self, member: Member) -> None:
        """Forget a member whose connection ended (synchronous, idempotent)."""
        if self.members.pop(id(member), None) is not None:
            self.presence.leave(id(member), member.role)
            metrics.CONNECTIONS.labels(member.role).dec()
            self._last_activity = trio.current_time()
            self._poke()

    def set_cursor(self, member: Member, cursor: dict[str, Any] | None) -> None:
        """An editor's cursor moved (synchronous; goes out with the next presence frame)."""
        self.presence.set_cursor(id(member), cursor, self.doc.version)
        self._poke()

    def close_members(
        self, code: int, reason: str, predicate: Callable[[Member], bool] = lambda m: True
    ) -> int:
        """Send an error and close every matching member with `code`; returns how many."""
        victims = [m for m in self.members.values() if predicate(m)]
        for member in victims:
            member.peer.send_private(_frame(Error(_close_name(code), reason)))
            member.peer.close(code, reason)
            self.detach(member)
        return len(victims)

    def stop(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Ask the loop to finish: flush, close members with `code`, snapshot, release the store."""
        self.stopping = True
        self._close_code, self._close_reason = code, reason
        self._poke()

    def counts(self) -> tuple[int, int]:
        """(viewers, editors) connected now."""
        return self.presence.viewers, len(self.presence.editors)

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The room task. Returns after `stop`, an idle timeout or a storage failure."""
        metrics.NOTEBOOKS_OPEN.inc()
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                try:
                    await self._loop(nursery)
                finally:
                    self.stopping = True
                    self._inbox_send.close()
                    with trio.CancelScope(shield=True):
                        await self._shutdown()
                    nursery.cancel_scope.cancel()
        finally:
            metrics.NOTEBOOKS_OPEN.dec()
            self.closed.set()

    async def _loop(self, nursery: trio.Nursery) -> None:
        while not self.stopping:
            batch: list[_Submit | _Join | _Call] = []
            with trio.CancelScope(deadline=self._deadline()) as self._wait_scope:
                batch.append(await self._inbox.receive())
            self._wait_scope = None
            while len(batch) < self.config.max_batch:
                try:
                    batch.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            if batch:
                self._last_activity = trio.current_time()
                await self._process(batch)
                if self.failure is not None:
                    return
            self._flush(trio.current_time())
            if not self._unframed and self._pending_joins:
                self._serve_joins()
            now = trio.current_time()
            if not self._snapshotting and self.store.snapshot_due(self.doc.version):
                self._snapshotting = True
                self._snapshot_done = trio.Event()
                nursery.start_soon(self._snapshot, self.doc.notebook, self.doc.version)
            if not self.members and now >= self._last_activity + self.config.idle_timeout:
                self.stopping = True

    def _deadline(self) -> float:
        if self.stopping:
            return -float("inf")
        deadlines = []
        ops_at = self._last_frame + self.config.coalesce
        if self._unframed:
            deadlines.append(ops_at)
        if self.presence.dirty:
            deadlines.append(self._last_presence + self.config.presence_interval + self.config.presence_grace)
        if not self.members:
            deadlines.append(self._last_activity + self.config.idle_timeout)
        return min(deadlines) if deadlines else float("inf")

    def _poke(self) -> None:
        """Re-evaluate the wait deadline (a cursor moved, a member left, a stop was asked)."""
        if self._wait_scope is not None:
            self._wait_scope.deadline = min(self._wait_scope.deadline, self._deadline())

    async def _send(self, item: _Submit | _Join | _Call) -> None:
        if self.failure is not None:
            raise Unavailable(
                f"notebook {self.id} cannot take writes: {self.failure.message}", code="storage_failed"
            )
        try:
            await self._inbox_send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Unavailable(f"notebook {self.id} is closing; retry", code="closing") from None

    async def _process(self, batch: list[_Submit | _Join | _Call]) -> None:
        """One tick: apply, make durable, then release acks and call results."""
        before = self.doc.version
        after_durable: list[Callable[[], None]] = []
        now_ms = _now_ms()
        for item in batch:
            if isinstance(item, _Submit):
                self._apply_submit(item, now_ms, after_durable)
            elif isinstance(item, _Join):
                self._pending_joins.append(item)
            else:
                try:
                    item.result = item.fn(self.doc)
                except BaseException as exc:  # handed back to the caller, raised there
                    item.error = exc
                after_durable.append(item.done.set)
        if self.doc.version > before:
            records = [
                self.doc.history[i]
                for i in range(len(self.doc.history) - (self.doc.version - before), len(self.doc.history))
            ]
            try:
                await self.store.append(records)
            except StorageError as exc:
                self._fail(exc, batch)
                return
            metrics.OPS_COMMITTED.inc(len(records))
            for record in records:
                self._encoded[record.v] = _encoded_entry(record)
                self.presence.apply(record)
            for v in range(self.doc.oldest_base - len(records), self.doc.oldest_base + 1):
                self._encoded.pop(v, None)
            self._unframed.extend(records)
            self.info.version = self.doc.version
            self.info.updated = records[-1].time
        for release in after_durable:
            release()

    def _apply_submit(self, item: _Submit, now_ms: int, after_durable: list[Callable[[], None]]) -> None:
        member = item.member  # committed even if its connection closed meanwhile: it was received
        try:
            result = self.doc.submit(
                item.op, item.base, member.client, item.seq, str(member.user["id"]), now_ms
            )
        except Rejected as exc:
            metrics.REJECTS.labels(exc.code).inc()
            member.peer.send_private(_frame(Reject(item.seq, exc.code, exc.message)))
            return
        if isinstance(result, Duplicate):
            frame = _frame(Ack(item.seq, result.v))
            after_durable.append(lambda: member.peer.send_private(frame))

    def _fail(self, exc: StorageError, batch: list[_Submit | _Join | _Call]) -> None:
        """The disk failed: nothing of this batch is acknowledged; members are told and closed."""
        log.error("notebook %s: storage failed, closing the room: %s", self.id, exc.message)
        self.failure = exc
        self._unframed.clear()
        for item in batch:
            if isinstance(item, _Call):
                item.error = Unavailable(
                    f"the notebook's storage failed: {exc.message}", code="storage_failed"
                )
                item.done.set()
        self._close_code, self._close_reason = 1011, "storage failed; reconnect later"

    # -- frames ------------------------------------------------------------------------------------

    def _flush(self, now: float) -> None:
        """Publish what is due: the coalesced ops, the presence frame, or both in one write.

        Presence rides along with an ops frame whenever one goes out after `presence_interval`;
        it goes alone only if no ops frame came within `presence_grace` after that. In a busy
        room that saves one write per connection per presence frame.
        """
        ops_due = bool(self._unframed) and now >= self._last_frame + self.config.coalesce
        presence_at = self._last_presence + self.config.presence_interval
        presence_due = self.presence.dirty and (
            (ops_due and now >= presence_at) or now >= presence_at + self.config.presence_grace
        )
        frames: list[bytes] = []
        if presence_due:
            frames.append(_frame(self.presence.message()))
            metrics.BROADCAST_FRAMES.labels("presence").inc()
            self._last_presence = now
        if ops_due:
            entries = [self._encoded[r.v] for r in self._unframed]
            self._unframed.clear()
            frames.append(wsframe.text_frame(ops_frame_payload(entries)))
            metrics.BROADCAST_FRAMES.labels("ops").inc()
            self._last_frame = now
        if frames:
            self._broadcast(frames[0] if len(frames) == 1 else b"".join(frames))

    def _broadcast(self, data: bytes) -> None:
        """Append `data` (one or more complete WebSocket frames) to the log and offer it to all."""
        number = self.frames.append(data)
        sent = 0
        for member in list(self.members.values()):
            sent += member.peer.offer(number, data)
        metrics.FRAMES_SENT.inc(sent)

    def _doc_bytes(self) -> bytes:
        """The welcome DOC at head, encoded once per version and shared by every joiner."""
        if self._doc_cache is None or self._doc_cache[0] != self.doc.version:
            self._doc_cache = (self.doc.version, orjson.dumps(notebook_to_doc(self.doc.notebook)))
        return self._doc_cache[1]

    def _serve_joins(self) -> None:
        joins, self._pending_joins = self._pending_joins, []
        version = self.doc.version
        for join in joins:
            member = join.member
            if member.peer.closed:
                continue
            resumed = self.doc.ops_since(join.since) if join.since is not None else None
            if resumed is not None:
                entries = [self._encoded[r.v] for r in resumed]
                chunks = [welcome_payload_with_ops(member.client, member.role, member.user, version, entries)]
            else:  # the shared DOC bytes are written as they are, never copied per joiner
                head = welcome_head(member.client, member.role, member.user, version)
                chunks = [head, b',"notebook":', self._doc_bytes(), b"}"]
            length = sum(len(c) for c in chunks)
            member.peer.attach(self.frames, self.frames.head)
            member.peer.send_private(wsframe.text_frame_header(length) + chunks[0], *chunks[1:])
            self.members[id(member)] = member
            self.presence.join(id(member), member.role, member.client, member.user, version)
            metrics.CONNECTIONS.labels(member.role).inc()

    # -- background and shutdown -------------------------------------------------------------------

    async def _snapshot(self, notebook: Any, version: int) -> None:
        try:
            await self.store.write_snapshot(notebook, version)
            self._snapshot_version = version
            if self.save_info is not None:
                await self.save_info(self.info)  # so summaries of closed notebooks stay close to head
        except StorageError as exc:
            log.warning("notebook %s: snapshot at %d failed: %s", self.id, version, exc.message)
        finally:
            self._snapshotting = False
            self._snapshot_done.set()

    async def _shutdown(self) -> None:
        if self.failure is None:
            if self._unframed:
                self._last_frame = -float("inf")
                self._flush(trio.current_time())
        while True:  # answer whatever is still queued: calls fail, joins and ops are refused
            try:
                item = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(item, _Call):
                item.error = Unavailable(f"notebook {self.id} is closing; retry", code="closing")
                item.done.set()
            elif isinstance(item, _Submit | _Join):
                item.member.peer.close(self._close_code, self._close_reason)
        for join in self._pending_joins:
            join.member.peer.close(self._close_code, self._close_reason)
        self._pending_joins.clear()
        self.close_members(self._close_code, self._close_reason)
        if self.failure is None:
            with trio.move_on_after(30):
                if self._snapshotting:  # let a background snapshot finish, then write the last one
                    await self._snapshot_done.wait()
                try:
                    if self.doc.version != self._snapshot_version:
                        await self.store.write_snapshot(self.doc.notebook, self.doc.version)
                except StorageError as exc:
                    log.warning("notebook %s: final snapshot failed: %s", self.id, exc.message)
        try:
            await self.store.close()
        except StorageError as exc:
            log.warning("notebook %s: close failed: %s", self.id, exc.message)


_CLOSE_NAMES = {
    1001: "going_away",
    1011: "storage_failed",
    4400: "protocol_violation",
    4401: "bad_token",
    4403: "forbidden",
    4404: "notebook_gone",
    4408: "too_slow",
    4413: "message_too_large",
}


def _close_name(code: int) -> str:
    return _CLOSE_NAMES.get(code, "closing")
