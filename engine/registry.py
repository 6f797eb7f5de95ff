"""Opens rooms on first use, at most one per notebook, and forgets them when they close."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from engine.errors import NotFound, Unavailable
from engine.room import Room, RoomConfig
from engine.storage.base import NotebookNotFound, NotebookStore, Storage, StorageError

log = logging.getLogger("agora.registry")

LEASE_LOST_CLOSE = 1012  # "service restart": the notebook is served elsewhere now, reconnect


class Registry:
    """The open rooms of this process. Rooms run as tasks in the nursery given to `run`."""

    def __init__(self, storage: Storage, config: RoomConfig) -> None:
        self.storage = storage
        self.config = config
        self.rooms: dict[str, Room] = {}
        self._opening: dict[str, trio.Event] = {}
        self._deleting: dict[str, int] = {}  # id -> deletions under way: no room opens meanwhile
        self._nursery: trio.Nursery | None = None
        self._accepting = True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery rooms live in until cancelled; then stop and flush every room."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await self.close_all()

    async def close_all(self) -> None:
        """Stop accepting, then stop every room and wait until each has flushed and closed."""
        self._accepting = False
        rooms = list(self.rooms.values())
        for room in rooms:
            room.stop()
        for room in rooms:
            await room.closed.wait()

    def get_open(self, notebook_id: str) -> Room | None:
        """The live room of a notebook, if any (no I/O)."""
        room = self.rooms.get(notebook_id)
        return room if room is not None and not room.stopping else None

    async def get(self, notebook_id: str) -> Room:
        """The notebook's room, opening (recovering) it if needed. `NotFound`, `Unavailable`."""
        while True:
            if self._deleting.get(notebook_id):
                raise NotFound(f"notebook {notebook_id!r} does not exist", code="notebook_not_found")
            room = self.rooms.get(notebook_id)
            if room is not None:
                if not room.stopping:
                    return room
                await room.closed.wait()
                continue
            opening = self._opening.get(notebook_id)
            if opening is not None:
                await opening.wait()
                continue
            if not self._accepting or self._nursery is None:
                raise Unavailable("the server is shutting down", code="shutting_down")
            event = self._opening[notebook_id] = trio.Event()
            try:
                return await self._open(notebook_id)
            finally:
                del self._opening[notebook_id]
                event.set()

    async def delete(self, notebook_id: str, remove: Callable[[], Awaitable[None]]) -> None:
        """Run `remove()` (which deletes the stored notebook) while no room is open for the id.

        Exclusive with opening: from the call on, `get` refuses the id (`NotFound`); a room
        being opened is waited for, and an open room is stopped (members get 4404) and waited
        for, before `remove` runs. So a room never opens on a notebook being deleted.
        """
        self._deleting[notebook_id] = self._deleting.get(notebook_id, 0) + 1
        try:
            while (opening := self._opening.get(notebook_id)) is not None:
                await opening.wait()
            room = self.rooms.get(notebook_id)
            if room is not None:
                room.deleted = True
                room.stop(4404, "the notebook was deleted")
                await room.closed.wait()
            await remove()
        finally:
            left = self._deleting[notebook_id] - 1
            if left:
                self._deleting[notebook_id] = left
            else:
                del self._deleting[notebook_id]

    async def _open(self, notebook_id: str) -> Room:
        assert self._nursery is not None
        try:
            info = await self.storage.info(notebook_id)
            store, recovered = await self.storage.open(notebook_id, self.config.window)
        except NotebookNotFound:
            raise NotFound(f"notebook {notebook_id!r} does not exist", code="notebook_not_found") from None
        except StorageError as exc:
            if exc.code == "not_owner":
                raise Unavailable(exc.message, code="not_owner") from None
            log.error("notebook %s cannot be opened: %s", notebook_id, exc.message)
            raise Unavailable(
                f"notebook {notebook_id!r} cannot be opened: {exc.message}", code=exc.code
            ) from None
        room = Room(notebook_id, info, store, recovered, self.config)
        room.save_info = self.storage.update_info
        self.rooms[notebook_id] = room
        await self._nursery.start(self._run_room, room)
        self._nursery.start_soon(self._watch_lease, room, store)
        return room

    async def _watch_lease(self, room: Room, store: NotebookStore) -> None:
        """Close the room (1012, clients reconnect) when its store loses the notebook's lease."""
        async with trio.open_nursery() as nursery:

            async def closed() -> None:
                await room.closed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(closed)
            await store.wait_lost()
            log.warning("notebook %s: this host lost its lease; closing the room", room.id)
            room.stop(LEASE_LOST_CLOSE, "notebook moved to another host; reconnect")
            nursery.cancel_scope.cancel()

    async def _run_room(
        self, room: Room, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await room.run(task_status=task_status)
        finally:
            if self.rooms.get(room.id) is room:
                del self.rooms[room.id]
            with trio.CancelScope(shield=True):
                try:
                    if room.failure is None and not room.deleted:
                        await self.storage.update_info(room.info)
                except NotebookNotFound:
                    pass
                except StorageError as exc:
                    log.warning("notebook %s: info not saved: %s", room.id, exc.message)
