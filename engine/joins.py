"""Welcomes: joins wait for a frame boundary, then get the shared DOC or the ops they missed.

A join is answered only when no committed op is waiting for its frame, so every member's cursor
starts exactly after its welcome version. The DOC of a version is encoded once and written to
every joiner as the same bytes, never copied per joiner, and never counted against a
connection's private queue (`Peer.send_welcome`), so any notebook under the size cap can be
joined by every viewer.

A large DOC is encoded in a worker thread (the notebook is an immutable value), so a big
notebook's joins never hold the trio thread. The encoding is tagged with the version and the
frame-log position it was taken at; a joiner welcomed from it starts its cursor there and
receives the frames committed since, as long as they are few (else it waits for a fresh one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
import trio

from engine import metrics
from engine.broadcaster import Broadcaster
from engine.document import Document
from engine.member import Member
from engine.ot.model import Notebook, notebook_to_doc
from engine.presence import PresenceBoard
from protocol import welcome_head, welcome_payload_with_ops, wsframe

THREAD_ENCODE_BYTES = 256 * 1024  # DOCs larger than this are encoded off the trio thread
STALE_FRAMES = 32  # a cached DOC at most this many frames old may still welcome joiners


@dataclass(slots=True)
class Join:
    """A connection asking to join, resuming after `since` when given."""

    member: Member
    since: int | None


@dataclass(frozen=True, slots=True)
class EncodedDoc:
    """The welcome DOC of `version`, encoded when the frame log's head was `frame`."""

    version: int
    frame: int
    data: bytes


def encode_doc(notebook: Notebook) -> bytes:
    """The welcome DOC bytes of `notebook` (safe in a worker thread: notebooks are immutable)."""
    return orjson.dumps(notebook_to_doc(notebook))


class Joins:
    """Pending joins of one room and the shared welcome DOC."""

    def __init__(
        self,
        doc: Document,
        members: dict[int, Member],
        presence: PresenceBoard,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.pending: list[Join] = []
        self._doc = doc
        self._members = members
        self._presence = presence
        self._wake = wake  # re-runs the room loop when a background encoding is ready
        self._cache: EncodedDoc | None = None
        self._encoding = False
        self.ready = False  # a background encoding finished while joins were waiting

    def doc_bytes(self) -> bytes:
        """The welcome DOC at head, encoded here (small notebooks) and cached per version."""
        if self._cache is None or self._cache.version != self._doc.version:
            self._cache = EncodedDoc(self._doc.version, -1, encode_doc(self._doc.notebook))
        return self._cache.data

    def _usable(self, broadcaster: Broadcaster) -> EncodedDoc | None:
        cache, frames = self._cache, broadcaster.frames
        if cache is None:
            return None
        if cache.version == self._doc.version:
            return EncodedDoc(cache.version, frames.head, cache.data)
        fresh_enough = 0 <= cache.frame and frames.head - cache.frame <= STALE_FRAMES
        if fresh_enough and frames.get(cache.frame) is not None:
            return cache
        return None

    def serve(self, broadcaster: Broadcaster, nursery: trio.Nursery) -> None:
        """Welcome the pending joins that can be served now; start a background encoding when
        a large notebook's DOC is missing or stale (those joins wait for it)."""
        self.ready = False
        joins, self.pending = self.pending, []
        version = self._doc.version
        large = self._doc.size.total > THREAD_ENCODE_BYTES
        for join in joins:
            member = join.member
            if member.peer.closed:
                continue
            resumed = self._doc.ops_since(join.since) if join.since is not None else None
            if resumed is not None:
                entries = broadcaster.entries(resumed)
                payload = welcome_payload_with_ops(member.client, member.role, member.user, version, entries)
                member.peer.attach(broadcaster.frames, broadcaster.frames.head)
                member.peer.send_private(wsframe.text_frame_header(len(payload)) + payload)
                self._admit(member, version)
                continue
            encoded = self._usable(broadcaster)
            if encoded is None and not large:
                self.doc_bytes()
                encoded = self._usable(broadcaster)
            if encoded is None:
                self.pending.append(join)
                continue
            head = welcome_head(member.client, member.role, member.user, encoded.version)
            tail = b"}"
            head += b',"notebook":'
            length = len(head) + len(encoded.data) + len(tail)
            member.peer.attach(broadcaster.frames, encoded.frame)
            member.peer.send_welcome(wsframe.text_frame_header(length) + head, encoded.data, tail)
            self._admit(member, encoded.version)
        if self.pending and not self._encoding:
            self._encoding = True
            nursery.start_soon(self._encode, self._doc.notebook, version, broadcaster.frames.head)

    async def _encode(self, notebook: Notebook, version: int, frame: int) -> None:
        try:
            data = await trio.to_thread.run_sync(encode_doc, notebook)
            self._cache = EncodedDoc(version, frame, data)
        finally:
            self._encoding = False
            self.ready = True
            self._wake()

    def _admit(self, member: Member, version: int) -> None:
        greeting = member.greeting() if member.greeting is not None else b""
        if greeting:  # after the welcome in the same FIFO (e.g. the kernel's state)
            member.peer.send_private(greeting)
        self._members[id(member)] = member
        self._presence.join(id(member), member.role, member.client, member.user, version)
        metrics.CONNECTIONS.labels(member.role).inc()
