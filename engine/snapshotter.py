"""Snapshots of one room: in the background when the store says one is due, and a last one
when the room closes. A failed snapshot is logged and retried later; the op log stays the
source of truth, so nothing acknowledged depends on a snapshot."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from engine.storage.base import NotebookInfo, NotebookStore, StorageError

log = logging.getLogger("agora.room")


class Snapshotter:
    """Starts at most one background snapshot at a time and writes the final one."""

    def __init__(self, notebook_id: str, store: NotebookStore, info: NotebookInfo, version: int) -> None:
        self._id = notebook_id
        self._store = store
        self._info = info
        self._running = False
        self._done = trio.Event()
        self._done.set()
        self.version = version  # the newest version with a snapshot written by this room
        self.save_info: Callable[[NotebookInfo], Awaitable[None]] | None = None

    def maybe_start(self, nursery: trio.Nursery, notebook: Any, version: int) -> None:
        """Start a background snapshot at `version` if the store wants one and none runs."""
        if not self._running and self._store.snapshot_due(version):
            self._running = True
            self._done = trio.Event()
            nursery.start_soon(self._write, notebook, version)

    async def _write(self, notebook: Any, version: int) -> None:
        try:
            await self._store.write_snapshot(notebook, version)
            self.version = version
            if self.save_info is not None:
                await self.save_info(self._info)  # so summaries of closed notebooks stay close to head
        except StorageError as exc:
            log.warning("notebook %s: snapshot at %d failed: %s", self._id, version, exc.message)
        finally:
            self._running = False
            self._done.set()

    async def final(self, notebook: Any, version: int) -> None:
        """Let a running snapshot finish, then write one at `version` unless it exists already."""
        await self._done.wait()
        try:
            if version != self.version:
                await self._store.write_snapshot(notebook, version)
                self.version = version
        except StorageError as exc:
            log.warning("notebook %s: final snapshot failed: %s", self._id, exc.message)
