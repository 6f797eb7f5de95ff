"""The engine's public face: what the HTTP API, the sync endpoint and the CLI call.

One instance per process. Every method is safe to call from any trio task and raises only
`engine.errors` exceptions for expected failures (not found, conflict, invalid, unavailable).
Everything that changes a notebook goes through its room, so HTTP edits are ordinary ops that
connected clients see live, and every answer is given only once what it reports is durable.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import trio

from engine.access import Access
from engine.auth.tokens import TokenClaims
from engine.diff import diff_notebooks
from engine.document import API_CLIENT, Document, Rejected
from engine.errors import Conflict, EngineError, Invalid, NotFound, TooLarge, Unavailable
from engine.idempotency import Idempotency
from engine.ot.model import Notebook
from engine.records import CommittedOp
from engine.registry import Registry
from engine.room import Room, RoomConfig
from engine.sizes import notebook_size
from engine.storage.base import NotebookExists, NotebookInfo, NotebookNotFound, Storage, StorageError


@dataclass(slots=True)
class Connections:
    viewers: int
    editors: int


@dataclass(slots=True)
class EditorSession:
    client: str
    user: dict[str, Any]  # {"id","name","color"?}
    cursor: dict[str, Any] | None  # {"cell","anchor","head"} or None


@dataclass(slots=True)
class CopyOutcome:
    """One target of a bulk copy: `created` (from source `version`), `exists` or `error`."""

    id: str
    status: str
    code: str | None = None
    message: str | None = None
    version: int | None = None


@dataclass(slots=True)
class Sessions:
    viewers: int
    editors: list[EditorSession]


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Turn storage failures into engine errors: a missing version is 404, the rest 503."""
    try:
        yield
    except NotebookExists:
        raise  # the caller decides (409, or another generated id)
    except NotebookNotFound as exc:
        raise NotFound(exc.message, code="notebook_not_found") from None
    except StorageError as exc:
        if exc.code == "version_not_found":
            raise NotFound(exc.message, code="version_not_found") from None
        raise Unavailable(exc.message, code=exc.code) from None


def fresh_copy(notebook: Notebook) -> Notebook:
    """A version-0 document with `notebook`'s live cells: no tombstones, no run state."""
    cells = {
        cid: replace(cell, created=0, exec_state=None)
        for cid, cell in notebook.cells.items()
        if not cell.deleted
    }
    displays = {did: frozenset(c for c in ids if c in cells) for did, ids in notebook.displays.items()}
    return Notebook(
        metadata=dict(notebook.metadata),
        cells=cells,
        displays={did: ids for did, ids in displays.items() if ids},
    )


class Engine:
    """Notebooks, their rooms and their storage. Run `run` in a nursery before use."""

    def __init__(self, storage: Storage, config: RoomConfig | None = None) -> None:
        self.storage = storage
        self.config = config or RoomConfig()
        self.registry = Registry(storage, self.config)
        self.access = Access(storage, self.registry)
        self.idempotency = Idempotency(storage)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; on the way out every room is flushed and closed."""
        await self.registry.run(task_status=task_status)

    async def room(self, notebook_id: str) -> Room:
        """The notebook's room, opened if needed. `NotFound`, `Unavailable`."""
        return await self.registry.get(notebook_id)

    async def admit(self, notebook_id: str, claims: TokenClaims) -> Room:
        """The room a verified user token may join (see `engine.access`). `NotFound` (gone),
        `StaleToken` (minted for an earlier notebook with this id), `Forbidden` (kicked)."""
        with _storage_errors():
            return await self.access.admit(notebook_id, claims)

    async def token_grant(self, notebook_id: str, user_id: str) -> tuple[str, int]:
        """(incarnation, issue time in epoch ms) for a token minted now. `NotFound`."""
        info = await self.info(notebook_id)
        with _storage_errors():
            return info.incarnation, await self.access.issue_time(notebook_id, info.incarnation, user_id)

    # -- notebooks -------------------------------------------------------------------------

    async def create_notebook(
        self, notebook_id: str | None, name: str | None, notebook: Notebook
    ) -> NotebookInfo:
        """Create at version 0. Generates a url-safe id when None. `Conflict` if the id exists,
        `TooLarge` when the content is over `RoomConfig.notebook_max_bytes`."""
        await self.check_size(notebook)
        now = _now_ms()
        for _ in range(5):
            nid = notebook_id or secrets.token_urlsafe(12)
            info = NotebookInfo(
                id=nid,
                name=name or nid,
                created=now,
                updated=now,
                version=0,
                incarnation=secrets.token_urlsafe(12),
            )
            try:
                with _storage_errors():
                    await self.storage.create(info, notebook)
                return info
            except NotebookExists:
                if notebook_id is not None:
                    raise Conflict(f"notebook {nid!r} already exists", code="notebook_exists") from None
        raise Conflict("could not allocate a notebook id", code="notebook_exists")

    async def check_size(self, notebook: Notebook) -> None:
        """`TooLarge` when `notebook`'s content is over the cap (measured off the trio thread)."""
        cap = self.config.notebook_max_bytes
        if cap is None:
            return
        size = await trio.to_thread.run_sync(notebook_size, notebook)
        if size > cap:
            raise TooLarge(f"the notebook is {size} bytes, over the limit of {cap}")

    async def list_notebooks(self, after: str | None, limit: int) -> list[NotebookInfo]:
        """Notebooks with id > after, in id order, at most limit (live versions for open ones)."""
        with _storage_errors():
            items = await self.storage.list(after, limit)
        return [self._live_info(info) for info in items]

    def _live_info(self, info: NotebookInfo) -> NotebookInfo:
        room = self.registry.get_open(info.id)
        return room.info if room is not None else info

    async def info(self, notebook_id: str) -> NotebookInfo:
        """Summary (head version, name, created, updated). `NotFound`."""
        room = self.registry.get_open(notebook_id)
        if room is not None:
            return room.info
        with _storage_errors():
            return await self.storage.info(notebook_id)

    def connections(self, notebook_id: str) -> Connections:
        """Live connection counts by role (0/0 when the notebook is not open)."""
        room = self.registry.get_open(notebook_id)
        viewers, editors = room.counts() if room is not None else (0, 0)
        return Connections(viewers=viewers, editors=editors)

    async def content(self, notebook_id: str, version: int | None = None) -> tuple[Notebook, int]:
        """The document at head (version None) or at a past version, with that version.
        `NotFound` for a missing notebook or a version outside 0..head."""
        room = await self.registry.get(notebook_id)
        notebook, head = await room.call(lambda doc: (doc.notebook, doc.version))
        if version is None or version == head:
            return notebook, head
        if version < 0 or version > head:
            raise NotFound(f"version {version} does not exist (head is {head})", code="version_not_found")
        with _storage_errors():
            return await room.store.load_version(version), version

    async def _commit_diff(
        self, notebook_id: str, target: Notebook, base_version: int | None, user: str
    ) -> NotebookInfo:
        room = await self.registry.get(notebook_id)

        def apply(doc: Document) -> None:
            if base_version is not None and base_version != doc.version:
                raise Conflict(
                    f"base_version {base_version} is stale: the head is {doc.version}",
                    code="version_conflict",
                )
            op = diff_notebooks(doc.notebook, target)
            if op:
                try:
                    doc.commit_local(op, API_CLIENT, user, _now_ms())
                except Rejected as exc:
                    if exc.code == "notebook_too_large":
                        raise TooLarge(exc.message) from None
                    raise Invalid(exc.message, code=exc.code) from None

        await room.call(apply)
        return room.info

    async def replace_content(
        self, notebook_id: str, notebook: Notebook, base_version: int | None, user: str
    ) -> NotebookInfo:
        """Make head's visible cells equal `notebook`'s by ordinary ops (connected clients see
        them live). `Conflict` when base_version is given and is not head; `TooLarge` over the cap."""
        await self.check_size(notebook)
        return await self._commit_diff(notebook_id, notebook, base_version, user)

    async def revert(self, notebook_id: str, version: int, user: str) -> NotebookInfo:
        """New ops that make head's visible cells equal version's. `NotFound` for a bad version."""
        target, _ = await self.content(notebook_id, version)
        return await self._commit_diff(notebook_id, target, None, user)

    async def delete_notebook(self, notebook_id: str) -> None:
        """Delete; connected clients are closed with 4404. `NotFound`.

        Exclusive with opening the notebook (see `Registry.delete`): no room can open on it
        while it is being deleted, so nothing is acknowledged into a deleted notebook.
        """

        async def remove() -> None:
            try:
                await self.storage.delete(notebook_id)
            except NotebookNotFound:
                raise NotFound(
                    f"notebook {notebook_id!r} does not exist", code="notebook_not_found"
                ) from None

        with _storage_errors():
            await self.registry.delete(notebook_id, remove)

    async def copy_notebook(self, source_id: str, target_id: str | None, name: str | None) -> NotebookInfo:
        """New notebook whose version-0 content is source's head content. `NotFound`, `Conflict`."""
        source = await self.info(source_id)
        notebook, _ = await self.content(source_id)
        return await self.create_notebook(target_id, name or source.name, fresh_copy(notebook))

    async def copy_many(
        self, source_id: str, targets: list[tuple[str, str | None]], concurrency: int = 8
    ) -> list[CopyOutcome]:
        """Copy source's head to every `(id, name)` target; one outcome per target, in order.

        The source is read once, so every target gets the same version. A target whose id is
        taken is `exists` (left alone); any other failure is that target's `error`, never the
        batch's. `NotFound` only when the source is missing.
        """
        source = await self.info(source_id)
        notebook, version = await self.content(source_id)
        content = fresh_copy(notebook)
        outcomes: list[CopyOutcome] = [CopyOutcome(t[0], "error") for t in targets]
        limiter = trio.CapacityLimiter(concurrency)

        async def one(index: int, target_id: str, name: str | None) -> None:
            async with limiter:
                try:
                    await self.create_notebook(target_id, name or source.name, content)
                    outcomes[index] = CopyOutcome(target_id, "created", version=version)
                except Conflict:
                    outcomes[index] = CopyOutcome(target_id, "exists")
                except EngineError as exc:
                    outcomes[index] = CopyOutcome(target_id, "error", exc.code, exc.message)

        async with trio.open_nursery() as nursery:
            for index, (target_id, name) in enumerate(targets):
                nursery.start_soon(one, index, target_id, name)
        return outcomes

    async def history(self, notebook_id: str, since: int, limit: int) -> list[CommittedOp]:
        """Committed ops with v > since, oldest first, at most limit."""
        room = await self.registry.get(notebook_id)
        recent = await room.call(lambda doc: doc.ops_since(max(since, 0)))
        if recent is not None:
            return recent[:limit]
        durable = room.info.version  # the log may hold a written but not yet fsync'd batch
        with _storage_errors():
            return [r for r in await room.store.history(since, limit) if r.v <= durable]

    def sessions(self, notebook_id: str) -> Sessions:
        """Who is connected now."""
        room = self.registry.get_open(notebook_id)
        if room is None:
            return Sessions(viewers=0, editors=[])
        return Sessions(
            viewers=room.presence.viewers,
            editors=[EditorSession(e.client, e.user, e.cursor) for e in room.presence.editors.values()],
        )

    async def kick(self, notebook_id: str, user_id: str) -> int:
        """Close that user's connections to the notebook with 4403 and refuse every token of
        theirs issued until now (kept in the store); returns how many connections closed."""
        info = await self.info(notebook_id)
        with _storage_errors():
            return await self.access.kick(notebook_id, info.incarnation, user_id)
