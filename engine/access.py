"""Who may join a notebook: kicks that stick, tokens bound to a notebook's incarnation.

A kick (`DELETE …/sessions/{user}`) is a record in the store, `kick:<notebook>:<incarnation>:<user>`
holding the kick time in epoch milliseconds; a token whose issue time is at or before it is
refused with 4403. The record outlives every token it can refuse (the longest token ttl plus
margin), so it survives restarts and, with a shared store, works on every host. A token also
names the incarnation of the notebook it was minted for: after a delete and a re-create with the
same id it is refused with 4401 (`token_stale`), so the platform mints a new one.
"""

from __future__ import annotations

import time

from engine.auth.tokens import TokenClaims
from engine.errors import Forbidden, StaleToken
from engine.registry import Registry
from engine.room import Room
from engine.storage.base import Storage

MAX_TOKEN_TTL_MS = 86_400_000
KICK_KEEP_MS = MAX_TOKEN_TTL_MS + 3_600_000  # a kick must outlive every token issued before it


def now_ms() -> int:
    """The wall clock in epoch milliseconds (what kicks and token issue times compare)."""
    return int(time.time() * 1000)


def kick_key(notebook_id: str, incarnation: str, user_id: str) -> str:
    """The store record holding the newest kick of `user_id` from that life of the notebook."""
    return f"kick:{notebook_id}:{incarnation}:{user_id}"


class Access:
    """Admission to rooms and kicks, over the store's records and the open rooms."""

    def __init__(self, storage: Storage, registry: Registry) -> None:
        self.storage = storage
        self.registry = registry

    async def kicked_at(self, notebook_id: str, incarnation: str, user_id: str) -> int | None:
        """Epoch ms of the user's newest kick from that incarnation, if one is on record."""
        raw = await self.storage.get_record(kick_key(notebook_id, incarnation, user_id), now_ms())
        return int(raw) if raw else None

    async def admit(self, notebook_id: str, claims: TokenClaims) -> Room:
        """The room a verified token may join, opened if needed.

        `NotFound` (4404) when the notebook is gone, `StaleToken` (4401) when the token was
        minted for an earlier notebook with this id, `Forbidden` (4403) when its user was kicked
        after it was issued. The room checks the kick again when it takes the join, so a kick
        that lands meanwhile is not missed.
        """
        room = await self.registry.get(notebook_id)
        if claims.incarnation != room.info.incarnation:
            raise StaleToken(
                "this token was minted for an earlier notebook with this id; ask for a new one",
                code="token_stale",
            )
        user_id = str(claims.user["id"])
        kicked = room.kicked.get(user_id)
        if kicked is None:
            kicked = await self.kicked_at(notebook_id, room.info.incarnation, user_id)
            if kicked is not None:
                room.kicked[user_id] = max(kicked, room.kicked.get(user_id, 0))
        if kicked is not None and claims.issued <= kicked:
            raise Forbidden("this user was disconnected from the notebook by the platform", code="kicked")
        return room

    async def kick(self, notebook_id: str, incarnation: str, user_id: str) -> int:
        """Record the kick durably, then close the user's connections (4403); returns how many."""
        at = now_ms()
        await self.storage.put_record(
            kick_key(notebook_id, incarnation, user_id), str(at).encode(), at + KICK_KEEP_MS
        )
        room = self.registry.get_open(notebook_id)
        return room.kick(user_id, at) if room is not None else 0

    async def issue_time(self, notebook_id: str, incarnation: str, user_id: str) -> int:
        """The issue time for a token minted now: after any kick of the user, so a token minted
        after a kick always works, even within the kick's millisecond."""
        kicked = await self.kicked_at(notebook_id, incarnation, user_id)
        now = now_ms()
        return now if kicked is None or now > kicked else kicked + 1

