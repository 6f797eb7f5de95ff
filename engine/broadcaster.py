"""The room's outgoing side: committed ops coalesced into shared frames, presence riding along.

An op committed while the room is quiet goes out at once; ops committed within `coalesce`
seconds of the previous frame share the next one, so frames per second stay bounded whatever
the edit rate. Each op's `ops` entry is encoded once when it commits and kept for the retained
window (resume welcomes reuse it); each frame is encoded once and offered to every member as
the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine import metrics
from engine.fanout import FrameLog
from engine.member import Member, message_frame
from engine.presence import PresenceBoard
from engine.records import CommittedOp
from protocol import encode_op_entry, ops_frame_payload, wsframe


def encoded_entry(record: CommittedOp) -> bytes:
    """The record's `ops` entry, copied to its exact size: orjson's result sits in a ~4 KiB
    allocation whatever its length, and the room keeps one of these per retained op."""
    return bytes(memoryview(encode_op_entry(record.wire())))


class Broadcaster:
    """Shared frames of one room: the encoded op window, the coalescing clock, the frame log."""

    def __init__(
        self,
        members: dict[int, Member],
        presence: PresenceBoard,
        history: Iterable[CommittedOp],
        *,
        retain_frames: int,
        coalesce: float,
        presence_interval: float,
        presence_grace: float,
    ) -> None:
        self.frames = FrameLog(retain_frames)
        self._members = members
        self._presence = presence
        self._coalesce = coalesce
        self._presence_interval = presence_interval
        self._presence_grace = presence_grace
        self._encoded: dict[int, bytes] = {r.v: encoded_entry(r) for r in history}
        self._unframed: list[CommittedOp] = []
        self._last_frame = -1e9
        self._last_presence = -1e9

    @property
    def pending(self) -> bool:
        """Whether committed ops wait for their frame (joins wait for a frame boundary)."""
        return bool(self._unframed)

    def entries(self, records: Sequence[CommittedOp]) -> list[bytes]:
        """The encoded `ops` entries of retained records (for resume welcomes)."""
        return [self._encoded[r.v] for r in records]

    def committed(self, records: Sequence[CommittedOp], oldest_base: int) -> None:
        """Durable `records` wait for the next frame; entries older than the window are dropped."""
        for record in records:
            self._encoded[record.v] = encoded_entry(record)
        for v in range(oldest_base - len(records), oldest_base + 1):
            self._encoded.pop(v, None)
        self._unframed.extend(records)

    def discard_pending(self) -> None:
        """Forget unframed ops (their batch was never made durable)."""
        self._unframed.clear()

    def deadline(self) -> float | None:
        """When the next frame (ops or presence) falls due, or None when nothing waits."""
        deadlines = []
        if self._unframed:
            deadlines.append(self._last_frame + self._coalesce)
        if self._presence.dirty:
            deadlines.append(self._last_presence + self._presence_interval + self._presence_grace)
        return min(deadlines) if deadlines else None

    def flush(self, now: float, *, force: bool = False) -> None:
        """Publish what is due: the coalesced ops, the presence frame, or both in one write.

        Presence rides along with an ops frame whenever one goes out after `presence_interval`;
        it goes alone only if no ops frame came within `presence_grace` after that. In a busy
        room that saves one write per connection per presence frame. `force` sends pending ops
        now (shutdown).
        """
        ops_due = bool(self._unframed) and (force or now >= self._last_frame + self._coalesce)
        presence_at = self._last_presence + self._presence_interval
        presence_due = self._presence.dirty and (
            (ops_due and now >= presence_at) or now >= presence_at + self._presence_grace
        )
        frames: list[bytes] = []
        if presence_due:
            frames.append(message_frame(self._presence.message()))
            metrics.BROADCAST_FRAMES.labels("presence").inc()
            self._last_presence = now
        if ops_due:
            entries = [self._encoded[r.v] for r in self._unframed]
            self._unframed.clear()
            frames.append(wsframe.text_frame(ops_frame_payload(entries)))
            metrics.BROADCAST_FRAMES.labels("ops").inc()
            self._last_frame = now
        if frames:
            self.broadcast(frames[0] if len(frames) == 1 else b"".join(frames))

    def broadcast(self, data: bytes) -> None:
        """Append `data` (one or more complete WebSocket frames) to the log and offer it to all."""
        number = self.frames.append(data)
        sent = 0
        for member in list(self._members.values()):
            sent += member.peer.offer(number, data)
        metrics.FRAMES_SENT.inc(sent)
