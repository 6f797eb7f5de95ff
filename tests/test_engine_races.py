"""Engine-level races on real files: delete against open, hundreds of times."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from engine.document import API_CLIENT, Document
from engine.engine import Engine
from engine.errors import EngineError, NotFound
from engine.ot.model import Notebook
from engine.room import RoomConfig
from engine.storage.base import NotebookNotFound
from engine.storage.files import FileStorage

ROUNDS = 300


async def _checkpoints(n: int) -> None:
    for _ in range(n):
        await trio.lowlevel.checkpoint()


async def test_delete_and_open_are_exclusive(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "data")
    engine = Engine(storage, RoomConfig(idle_timeout=600))
    rng = random.Random(8)
    op = [{"t": "meta_set", "id": None, "key": "touched", "value": True}]
    outcomes = {"opened": 0, "refused": 0}

    def touch(doc: Document) -> int:
        doc.commit_local(op, API_CLIENT, "api", 0)
        return doc.version

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        for _ in range(ROUNDS):
            await engine.create_notebook("nb", "nb", Notebook())
            # A fresh notebook: nothing of an earlier life may show (no zombie room).
            notebook, version = await engine.content("nb")
            assert version == 0 and "touched" not in notebook.metadata
            room = engine.registry.get_open("nb")
            assert room is not None
            room.stop()  # closed, so the race below has to open it again
            await room.closed.wait()

            async def opener(delay: int) -> None:
                await _checkpoints(delay)
                try:
                    room = await engine.room("nb")
                    await room.call(touch)
                    outcomes["opened"] += 1
                except (NotFound, EngineError):
                    outcomes["refused"] += 1

            async def deleter(delay: int) -> None:
                await _checkpoints(delay)
                await engine.delete_notebook("nb")

            async with trio.open_nursery() as race:
                race.start_soon(opener, rng.randrange(4))
                race.start_soon(deleter, rng.randrange(4))
            assert engine.registry.get_open("nb") is None, "a room opened on a deleted notebook"
            assert "nb" not in engine.registry.rooms
            with pytest.raises(NotebookNotFound):
                await storage.info("nb")
        nursery.cancel_scope.cancel()
    assert outcomes["opened"] and outcomes["refused"], outcomes
