"""Engine-level races on real files: delete against open, and calls that time out."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from engine.document import API_CLIENT, Document
from engine.engine import Engine
from engine.errors import EngineError, NotFound, Unavailable
from engine.ot.model import Notebook
from engine.room import RoomConfig
from engine.storage.base import NotebookNotFound
from engine.storage.disk import Disk
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


class StallingDisk(Disk):
    """A real disk whose fsyncs wait while `stalled` is clear (a disk that stops answering)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.go.set()

    def fsync(self, fd: int) -> None:
        self.go.wait(30)
        super().fsync(fd)


async def test_a_call_that_timed_out_never_runs_and_a_started_one_answers(tmp_path: Path) -> None:
    disk = StallingDisk()
    storage = FileStorage(tmp_path / "data", disk=disk)
    engine = Engine(storage, RoomConfig(call_timeout=0.3, inbox_size=1))

    def mark(name: str) -> Callable[[Document], int]:
        def fn(doc: Document) -> int:
            doc.commit_local([{"t": "meta_set", "id": None, "key": name, "value": 1}], API_CLIENT, "api", 0)
            return doc.version

        return fn

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.create_notebook("nb", "nb", Notebook())
        room = await engine.room("nb")
        answers: dict[str, object] = {}

        async def call(name: str) -> None:
            try:
                answers[name] = await room.call(mark(name))
            except Unavailable as exc:
                answers[name] = exc.code

        async def until(condition: Callable[[], bool]) -> None:
            with trio.fail_after(10):
                while not condition():
                    await trio.sleep(0.005)

        inbox = room._inbox_send.statistics
        disk.go.clear()  # the room's next append hangs in fsync
        nursery.start_soon(call, "started")
        await until(lambda: room.doc.version == 1)  # taken, applied, stuck making it durable
        nursery.start_soon(call, "queued")
        await until(lambda: inbox().current_buffer_used == 1)  # sits in the inbox (size 1)
        nursery.start_soon(call, "never_entered")
        await until(lambda: inbox().tasks_waiting_send == 1)  # cannot even enter the full inbox
        await until(lambda: len(answers) == 2)  # both gave up after call_timeout
        assert answers == {"queued": "timeout", "never_entered": "timeout"}
        disk.go.set()
        with trio.fail_after(10):
            while "started" not in answers:
                await trio.sleep(0.01)
        assert answers["started"] == 1, "a started call is answered with its result, however long"
        notebook, version = await engine.content("nb")
        assert version == 1 and set(notebook.metadata) == {"started"}, "timed-out calls never ran"
        nursery.cancel_scope.cancel()
