"""Welcomes: joins wait for a frame boundary, then get the shared DOC or the ops they missed.

A join is answered only when no committed op is waiting for its frame, so every member's cursor
starts exactly after its welcome version. The DOC of a version is encoded once and written to
every joiner as the same bytes, never copied per joiner.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from engine import metrics
from engine.broadcaster import Broadcaster
from engine.document import Document
from engine.member import Member
from engine.ot.model import notebook_to_doc
from engine.presence import PresenceBoard
from protocol import welcome_head, welcome_payload_with_ops, wsframe


@dataclass(slots=True)
class Join:
    """A connection asking to join, resuming after `since` when given."""

    member: Member
    since: int | None


class Joins:
    """Pending joins of one room and the shared welcome DOC."""

    def __init__(self, doc: Document, members: dict[int, Member], presence: PresenceBoard) -> None:
        self.pending: list[Join] = []
        self._doc = doc
        self._members = members
        self._presence = presence
        self._doc_cache: tuple[int, bytes] | None = None

    def doc_bytes(self) -> bytes:
        """The welcome DOC at head, encoded once per version and shared by every joiner."""
        if self._doc_cache is None or self._doc_cache[0] != self._doc.version:
            self._doc_cache = (self._doc.version, orjson.dumps(notebook_to_doc(self._doc.notebook)))
        return self._doc_cache[1]

    def serve(self, broadcaster: Broadcaster) -> None:
        """Welcome every pending join at the current head and make it a member."""
        joins, self.pending = self.pending, []
        version = self._doc.version
        for join in joins:
            member = join.member
            if member.peer.closed:
                continue
            resumed = self._doc.ops_since(join.since) if join.since is not None else None
            if resumed is not None:
                entries = broadcaster.entries(resumed)
                chunks = [welcome_payload_with_ops(member.client, member.role, member.user, version, entries)]
            else:
                head = welcome_head(member.client, member.role, member.user, version)
                chunks = [head, b',"notebook":', self.doc_bytes(), b"}"]
            length = sum(len(c) for c in chunks)
            member.peer.attach(broadcaster.frames, broadcaster.frames.head)
            member.peer.send_private(wsframe.text_frame_header(length) + chunks[0], *chunks[1:])
            self._members[id(member)] = member
            self._presence.join(id(member), member.role, member.client, member.user, version)
            metrics.CONNECTIONS.labels(member.role).inc()
