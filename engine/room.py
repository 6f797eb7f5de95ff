"""The per-notebook actor: one trio task owns a notebook's document and serialises everything.

One pass of the loop (a "tick"): take every waiting message from the bounded inbox, run the
submissions through `Document.submit`, make the whole batch durable with one `append`
(group commit: one fsync), and only then let anyone see it: acks of resubmits, answers to
HTTP calls, and the shared `ops` frame. The room's other jobs live beside it, one module each:
coalescing and broadcasting frames (`engine.broadcaster`), welcomes at frame boundaries
(`engine.joins`), background and final snapshots (`engine.snapshotter`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from engine import metrics
from engine.broadcaster import Broadcaster
from engine.document import Document, Duplicate, Rejected
from engine.errors import Unavailable
from engine.fanout import FanoutLimits, FrameLog
from engine.joins import Join, Joins
from engine.member import Member, close_member, message_frame
from engine.presence import PresenceBoard
from engine.records import Component
from engine.snapshotter import Snapshotter
from engine.storage.base import SERVED_ELSEWHERE, NotebookInfo, NotebookStore, Recovered, StorageError
from protocol import Ack, Reject

__all__ = ["Member", "Room", "RoomConfig"]

log = logging.getLogger("agora.room")
T = TypeVar("T")
TIME_SLICE = 0.005  # seconds of batch work between two yields to the other tasks
KICKED = "disconnected by the platform"  # the close reason of a kick, at once or at a later join


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
    notebook_max_bytes: int | None = 32 * 1024 * 1024  # content cap (engine.sizes); None: none


@dataclass(slots=True)
class _Submit:
    member: Member
    seq: int
    base: int
    op: list[Component]


@dataclass(slots=True)
class _Call:
    fn: Callable[[Document], Any]
    taken: trio.Event = field(default_factory=trio.Event)  # the room ran it, or refused it
    done: trio.Event = field(default_factory=trio.Event)  # its answer is ready (and durable)
    abandoned: bool = False  # the caller gave up before the room took it: never run it
    result: Any = None
    error: BaseException | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        self.doc = Document(
            recovered.notebook, recovered.version, recovered.tail, config.window, config.notebook_max_bytes
        )
        self.info.version = recovered.version
        self.members: dict[int, Member] = {}
        self.presence = PresenceBoard()
        self.broadcaster = Broadcaster(
            self.members,
            self.presence,
            self.doc.history,
            retain_frames=config.fanout.retain_frames,
            coalesce=config.coalesce,
            presence_interval=config.presence_interval,
            presence_grace=config.presence_grace,
        )
        self.joins = Joins(self.doc, self.members, self.presence, wake=self._poke)
        self.snapshots = Snapshotter(notebook_id, store, info, recovered.version)
        self.stopping = False
        self.deleted = False
        self.closed = trio.Event()
        self.failure: StorageError | None = None
        self._inbox_send, self._inbox = trio.open_memory_channel[_Submit | Join | _Call](config.inbox_size)
        self._last_activity = trio.current_time()
        self._wait_scope: trio.CancelScope | None = None
        self._close_code = 1001
        self._close_reason = "server shutting down"
        # user id -> epoch ms of the newest kick: tokens issued up to then are refused at join
        self.kicked: dict[str, int] = {}
        # client id -> [user id, how many members or pending joins use it] (contract §8)
        self._holders: dict[str, list[Any]] = {}

    @property
    def frames(self) -> FrameLog:
        """The room's shared frame log (what members' cursors point into)."""
        return self.broadcaster.frames

    @property
    def save_info(self) -> Callable[[NotebookInfo], Awaitable[None]] | None:
        """Where snapshots save the summary (version, updated) of this notebook."""
        return self.snapshots.save_info

    @save_info.setter
    def save_info(self, fn: Callable[[NotebookInfo], Awaitable[None]] | None) -> None:
        self.snapshots.save_info = fn

    # -- API for connections and the engine (any task) ------------------------------------------

    async def submit(self, member: Member, seq: int, base: int, op: list[Component]) -> None:
        """Queue an editor's op; waits while the inbox is full (back-pressure on that reader)."""
        await self._send(_Submit(member, seq, base, op))

    async def join(self, member: Member, since: int | None) -> None:
        """Queue a join; the welcome goes out at the next frame boundary.

        When the room takes the join, a member whose token was issued at or before a kick of its
        user is closed with 4403, and a requested client id that another user holds (retained
        ops, or another connection) is replaced by a fresh one, which the welcome carries.
        """
        await self._send(Join(member, since))

    async def call(self, fn: Callable[[Document], T]) -> T:
        """Run `fn(document)` in the room task; returns once whatever it committed is durable.

        `config.call_timeout` bounds the wait to enter the inbox and for the room to take the
        call: a call that times out (or is cancelled) before the room takes it never runs, and
        the caller gets `Unavailable` code `timeout`. Once taken, the caller waits for the
        answer, so a call is never reported failed while it may still take effect.
        """
        item = _Call(fn)
        try:
            with trio.move_on_after(self.config.call_timeout):
                await self._send(item)
                await item.taken.wait()
        finally:
            if not item.taken.is_set():
                item.abandoned = True
        if not item.taken.is_set():
            raise Unavailable("the notebook did not answer in time; nothing was changed", code="timeout")
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[no-any-return]

    def kick(self, user_id: str, at: int) -> int:
        """Refuse `user_id`'s tokens issued at or before `at` (epoch ms) from now on, and close
        that user's connections (members and pending joins) with 4403. Returns how many."""
        self.kicked[user_id] = max(at, self.kicked.get(user_id, 0))
        pending = [j for j in self.joins.pending if str(j.member.user.get("id")) == user_id]
        for join in pending:
            self.joins.pending.remove(join)
            close_member(join.member, 4403, KICKED)
        return len(pending) + self.close_members(4403, KICKED, lambda m: str(m.user.get("id")) == user_id)

    def _admit(self, member: Member) -> bool:
        """Decide a join in the room task: refuse a kicked token, give a borrowed client id a
        fresh one. Returns whether the join goes ahead."""
        user = str(member.user["id"])
        kicked = self.kicked.get(user)
        if kicked is not None and member.issued <= kicked:
            close_member(member, 4403, KICKED)
            return False
        while self._held_by_other(member.client, user):
            member.client = secrets.token_urlsafe(12)
        holder = self._holders.setdefault(member.client, [user, 0])
        holder[1] += 1
        member.holds_client = True
        return True

    def _held_by_other(self, client: str, user: str) -> bool:
        owner = self.doc.owner(client)
        holder = self._holders.get(client)
        return (owner is not None and owner != user) or (holder is not None and holder[0] != user)

    def _release(self, member: Member) -> None:
        if member.holds_client:
            member.holds_client = False
            holder = self._holders.get(member.client)
            if holder is not None:
                holder[1] -= 1
                if holder[1] <= 0:
                    del self._holders[member.client]

    def detach(self, member: Member) -> None:
        """Forget a member whose connection ended (synchronous, idempotent)."""
        self._release(member)
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
            close_member(member, code, reason)
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
            batch: list[_Submit | Join | _Call] = []
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
            self.broadcaster.flush(trio.current_time())
            if not self.broadcaster.pending and self.joins.pending:
                self.joins.serve(self.broadcaster, nursery)
            self.snapshots.maybe_start(nursery, self.doc.notebook, self.doc.version)
            if not self.members and trio.current_time() >= self._last_activity + self.config.idle_timeout:
                self.stopping = True

    def _deadline(self) -> float:
        if self.stopping or self.joins.ready:
            return -float("inf")
        deadlines = []
        if (frame_at := self.broadcaster.deadline()) is not None:
            deadlines.append(frame_at)
        if not self.members:
            deadlines.append(self._last_activity + self.config.idle_timeout)
        return min(deadlines) if deadlines else float("inf")

    def _poke(self) -> None:
        """Re-evaluate the wait deadline (a cursor moved, a member left, a stop was asked)."""
        if self._wait_scope is not None:
            self._wait_scope.deadline = min(self._wait_scope.deadline, self._deadline())

    async def _send(self, item: _Submit | Join | _Call) -> None:
        if self.failure is not None:
            raise Unavailable(
                f"notebook {self.id} cannot take writes: {self.failure.message}", code="storage_failed"
            )
        try:
            await self._inbox_send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Unavailable(f"notebook {self.id} is closing; retry", code="closing") from None

    async def _process(self, batch: list[_Submit | Join | _Call]) -> None:
        """One tick: apply, make durable, then release acks and call results."""
        before = self.doc.version
        after_durable: list[Callable[[], None]] = []
        now_ms = _now_ms()
        slice_start = time.perf_counter()
        for item in batch:
            if time.perf_counter() - slice_start > TIME_SLICE:
                # Let other rooms and connections run: one notebook's batch of big ops must not
                # hold the trio thread (nothing here is visible to anyone before the append).
                await trio.lowlevel.checkpoint()
                slice_start = time.perf_counter()
            if isinstance(item, _Submit):
                self._apply_submit(item, now_ms, after_durable)
            elif isinstance(item, Join):
                if self._admit(item.member):
                    self.joins.pending.append(item)
            elif item.abandoned:
                continue  # its caller was told it timed out: it must never take effect
            else:
                item.taken.set()
                try:
                    item.result = item.fn(self.doc)
                except BaseException as exc:  # handed back to the caller, raised there
                    item.error = exc
                after_durable.append(item.done.set)
        if self.doc.version > before:
            history = self.doc.history
            records = [history[i] for i in range(len(history) - (self.doc.version - before), len(history))]
            try:
                await self.store.append(records)
            except StorageError as exc:
                self._fail(exc, batch)
                return
            metrics.OPS_COMMITTED.inc(len(records))
            for record in records:
                self.presence.apply(record)
            self.broadcaster.committed(records, self.doc.oldest_base)
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
            member.peer.send_private(message_frame(Reject(item.seq, exc.code, exc.message)))
            return
        if isinstance(result, Duplicate):
            frame = message_frame(Ack(item.seq, result.v))
            after_durable.append(lambda: member.peer.send_private(frame))

    def _fail(self, exc: StorageError, batch: list[_Submit | Join | _Call]) -> None:
        """The disk failed: nothing of this batch is acknowledged; members are told and closed."""
        log.error("notebook %s: storage failed, closing the room: %s", self.id, exc.message)
        self.failure = exc
        self.broadcaster.discard_pending()
        moved = exc.code in SERVED_ELSEWHERE  # another host serves it (or will): reconnect now
        code = exc.code if moved else "storage_failed"
        for item in batch:
            if isinstance(item, _Call):
                item.error = Unavailable(f"the notebook's storage failed: {exc.message}", code=code)
                item.done.set()
        if moved:
            self._close_code, self._close_reason = 1012, "notebook moved to another host; reconnect"
        else:
            self._close_code, self._close_reason = 1011, "storage failed; reconnect later"

    # -- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self.failure is None:
            self.broadcaster.flush(trio.current_time(), force=True)
        while True:  # answer whatever is still queued: calls fail, joins and ops are refused
            try:
                item = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(item, _Call):
                item.error = Unavailable(f"notebook {self.id} is closing; retry", code="closing")
                item.taken.set()
                item.done.set()
            else:
                item.member.peer.close(self._close_code, self._close_reason)
        for join in self.joins.pending:
            join.member.peer.close(self._close_code, self._close_reason)
        self.joins.pending.clear()
        self.close_members(self._close_code, self._close_reason)
        if self.failure is None:
            with trio.move_on_after(30):
                await self.snapshots.final(self.doc.notebook, self.doc.version)
        try:
            await self.store.close()
        except StorageError as exc:
            log.warning("notebook %s: close failed: %s", self.id, exc.message)
