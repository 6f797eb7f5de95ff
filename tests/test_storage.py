"""Storage behaviour on real files (and the in-memory twin): round trips, history, versions, retention."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from engine.ot.components import apply_op
from engine.ot.model import Notebook
from engine.records import CommittedOp
from engine.storage.base import NotebookExists, NotebookInfo, NotebookNotFound, StorageError
from engine.storage.disk import Disk
from engine.storage.files import FileStorage
from engine.storage.memory import MemoryStorage
from engine.storage.oplog import HEADER, MAGIC, decode_payload, encode_record
from engine.storage.postgres import PostgresStorage

# -- helpers ---------------------------------------------------------------------------------------


def gen_ops(n: int, *, start: int = 1, cells: int = 3, seed: int = 7) -> list[CommittedOp]:
    """`n` valid ops from version `start` on a notebook that starts empty at `start - 1 == 0`."""
    rng = random.Random(seed)
    lengths = [0] * cells
    out: list[CommittedOp] = []
    for v in range(start, start + n):
        k = v - 1
        if k < cells:
            op: list[dict[str, Any]] = [
                {
                    "t": "cell_insert",
                    "id": f"c{k}",
                    "pos": f"m{k}",
                    "cell": {"cell_type": "code", "source": ""},
                }
            ]
        else:
            i = rng.randrange(cells)
            if lengths[i] > 5 and rng.random() < 0.2:
                at = rng.randrange(lengths[i] - 2)
                op = [{"t": "text", "id": f"c{i}", "ops": [at, {"d": 2}]}]
                lengths[i] -= 2
            else:
                at = rng.randrange(lengths[i] + 1)
                text = rng.choice(["x", "yz", "é", "😀", "def f():\n"])
                op = [{"t": "text", "id": f"c{i}", "ops": [at, text]}]
                lengths[i] += len(text)
        out.append(
            CommittedOp(v=v, client=f"cl{v % 3}", seq=v, user=f"u{v % 2}", time=1_700_000_000_000 + v, op=op)
        )
    return out


def replay_to(ops: list[CommittedOp], version: int) -> Notebook:
    nb = Notebook()
    for op in ops[:version]:
        nb = apply_op(nb, op.op, op.v)
    return nb


def info(notebook_id: str = "nb1") -> NotebookInfo:
    return NotebookInfo(id=notebook_id, name="Test", created=1, updated=1)


class CountingDisk(Disk):
    def __init__(self) -> None:
        self.fsyncs = 0
        self.writes = 0

    def write(self, fd: int, data: bytes, offset: int) -> None:
        self.writes += 1
        super().write(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


Factory = Callable[..., Any]


@pytest.fixture(params=["files", "memory", "postgres"])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Builds a storage of any kind; calling it again gives a fresh instance over the same data
    (for PostgreSQL: another host on the same database)."""
    memory: list[MemoryStorage] = []
    hosts: list[PostgresStorage] = []
    url = request.getfixturevalue("pg_cluster").database() if request.param == "postgres" else ""

    def make(**kw: Any) -> Any:
        if request.param == "files":
            return FileStorage(tmp_path / "data", **kw)
        if request.param == "postgres":
            kw.pop("segment_ops", None)
            kw.pop("segment_bytes", None)
            hosts.append(PostgresStorage(url, **kw))
            return hosts[-1]
        if not memory:
            kw.pop("segment_ops", None)
            memory.append(MemoryStorage(**kw))
        return memory[0]

    yield make
    for host in hosts:
        host.leases.close_sync()
        host.pool.close()


async def append_in_batches(store: Any, ops: list[CommittedOp], seed: int = 1) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(ops):
        k = rng.choice([1, 1, 2, 5, 17])
        await store.append(ops[i : i + k])
        i += k


# -- the data dir ----------------------------------------------------------------------------------


async def test_incarnation_is_kept_and_survives_reopen(make_storage: Factory) -> None:
    storage = make_storage()
    await storage.create(NotebookInfo(id="a", name="A", created=7, updated=7, incarnation="xyz"), Notebook())
    await storage.create(NotebookInfo(id="b", name="B", created=9, updated=9), Notebook())
    storage = make_storage()
    assert (await storage.info("a")).incarnation == "xyz"
    assert (await storage.info("b")).incarnation == "c9"  # none given: derived from created
    await storage.update_info(NotebookInfo(id="a", name="A2", created=7, updated=8, incarnation="xyz"))
    assert [i.incarnation for i in await storage.list(None, 5)] == ["xyz", "c9"]


async def test_info_written_before_incarnations_gets_a_stable_one(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "data")
    await storage.create(info("old"), Notebook())
    path = tmp_path / "data" / "notebooks" / "old" / "info.json"
    path.write_bytes(b'{"id":"old","name":"Old","created":1234,"updated":1234,"version":0}')
    first = (await FileStorage(tmp_path / "data").info("old")).incarnation
    assert first == (await FileStorage(tmp_path / "data").info("old")).incarnation == "c1234"


async def test_records_expire_replace_and_survive_reopen(make_storage: Factory) -> None:
    t = int(time.time() * 1000) + 3_600_000  # in the future, so a reopen's sweep keeps them
    storage = make_storage()
    assert await storage.get_record("k", t) is None
    await storage.put_record("k", b"one", t + 1000)
    await storage.put_record("kick:nb:\u00e9:user/1", b"", t + 5000)
    await storage.put_record("gone", b"x", t + 50)
    storage = make_storage()
    assert await storage.get_record("k", t + 999) == b"one"
    assert await storage.get_record("k", t + 1000) is None  # expired at its expiry
    assert await storage.get_record("kick:nb:\u00e9:user/1", t + 100) == b""
    assert await storage.get_record("gone", t + 100) is None
    await storage.put_record("k", b"two", t + 2000)
    assert await storage.get_record("k", t + 1500) == b"two"
    with pytest.raises(StorageError) as err:
        await storage.put_record("x" * 1025, b"", t)
    assert err.value.code == "invalid_record"


async def test_expired_record_files_are_swept(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "data")
    await storage.put_record("old", b"x", 1)  # long expired
    await storage.put_record("new", b"y", 1 << 60)
    FileStorage(tmp_path / "data")  # a restart sweeps
    assert len(list((tmp_path / "data" / "records").iterdir())) == 1


async def test_create_info_list_update_delete(make_storage: Factory) -> None:
    storage = make_storage()
    for nid in ["b", "a", "c-1", "A_2"]:
        await storage.create(info(nid), Notebook())
    with pytest.raises(NotebookExists):
        await storage.create(info("a"), Notebook())
    assert [i.id for i in await storage.list(None, 10)] == ["A_2", "a", "b", "c-1"]
    assert [i.id for i in await storage.list("a", 1)] == ["b"]
    got = await storage.info("b")
    assert (got.id, got.name, got.version) == ("b", "Test", 0)
    await storage.update_info(NotebookInfo(id="b", name="Renamed", created=1, updated=5, version=3))
    assert (await storage.info("b")).name == "Renamed"
    await storage.delete("b")
    with pytest.raises(NotebookNotFound):
        await storage.info("b")
    with pytest.raises(NotebookNotFound):
        await storage.delete("b")
    with pytest.raises(NotebookNotFound):
        await storage.open("b", 10)
    with pytest.raises(NotebookNotFound):
        await storage.update_info(info("b"))
    assert [i.id for i in await storage.list(None, 10)] == ["A_2", "a", "c-1"]


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 65, "é", "a.b", ".tmp-a"])
async def test_ids_are_checked_before_paths(make_storage: Factory, bad: str) -> None:
    storage = make_storage()
    with pytest.raises(StorageError) as e:
        await storage.create(info(bad), Notebook())
    assert e.value.code == "invalid_id"
    with pytest.raises(StorageError):
        await storage.open(bad, 10)


async def test_delete_leaves_nothing(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    await store.append(gen_ops(5))
    await store.close()
    await storage.delete("nb1")
    assert list((tmp_path / "notebooks").iterdir()) == []
    await storage.create(info(), Notebook())  # the id is free again, at version 0
    store, rec = await storage.open("nb1", 10)
    assert rec.version == 0 and rec.tail == []
    await store.close()


async def test_crash_leftovers_are_invisible_and_removed(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    await storage.create(info(), Notebook())
    root = tmp_path / "notebooks"
    # A crash mid-delete (renamed to trash, not yet removed) and mid-create (temp dir).
    (root / "nb1").rename(root / ".trash-nb1-0000")
    (root / ".tmp-nb2-1234" / "log").mkdir(parents=True)
    assert await storage.list(None, 10) == []
    FileStorage(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == []


# -- round trips -----------------------------------------------------------------------------------


async def test_append_reopen_round_trip(make_storage: Factory) -> None:
    storage = make_storage(segment_ops=64, snapshot_every=100)
    await storage.create(info(), Notebook())
    ops = gen_ops(500)
    store, rec = await storage.open("nb1", 50)
    assert (rec.version, rec.tail) == (0, [])
    await append_in_batches(store, ops)
    with pytest.raises(StorageError) as e:
        await storage.open("nb1", 50)
    assert e.value.code == "already_open"
    await store.close()
    with pytest.raises(StorageError) as e:
        await store.append(gen_ops(1, start=501))
    assert e.value.code == "closed"

    storage = make_storage(segment_ops=64, snapshot_every=100)
    store, rec = await storage.open("nb1", 50)
    assert rec.version == 500
    assert rec.notebook == replay_to(ops, 500)
    assert rec.tail == ops[-50:]
    more = gen_ops(600)[500:]
    await store.append(more)
    await store.close()
    store, rec = await make_storage(segment_ops=64).open("nb1", 2000)
    assert rec.version == 600 and rec.tail == gen_ops(600)
    assert rec.notebook == replay_to(gen_ops(600), 600)
    await store.close()


async def test_append_requires_consecutive_versions(make_storage: Factory) -> None:
    storage = make_storage()
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(5)
    await store.append(ops[:2])
    with pytest.raises(StorageError) as e:
        await store.append(ops[3:])
    assert e.value.code == "bad_append"
    await store.append(ops[2:])  # not poisoned by a caller error
    assert store.head == 5
    await store.close()


async def test_record_codec_round_trip() -> None:
    op = CommittedOp(
        v=42, client="c", seq=3, user="u", time=123, op=[{"t": "text", "id": "a", "ops": ["\x00é😀"]}]
    )
    data = encode_record(op)
    magic, length, version, _crc = HEADER.unpack_from(data)
    assert (magic, length, version) == (MAGIC, len(data) - HEADER.size, 42)
    assert decode_payload(data[HEADER.size :], 42) == op
    assert b"\x00" not in data[HEADER.size :]  # payloads never contain the header's zero bytes


async def test_group_commit_is_one_write_and_one_fsync_per_batch(tmp_path: Path) -> None:
    disk = CountingDisk()
    storage = FileStorage(tmp_path, disk=disk, segment_ops=1000)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(201)
    await store.append(ops[:1])  # creates the first segment (plus a directory fsync)
    for size in (1, 10, 100):
        w, f = disk.writes, disk.fsyncs
        start = store.head
        await store.append(ops[start : start + size])
        assert (disk.writes - w, disk.fsyncs - f) == (1, 1)
    await store.close()


# -- history and past versions ---------------------------------------------------------------------


async def test_history_paging(make_storage: Factory) -> None:
    storage = make_storage(segment_ops=50)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(333)
    await append_in_batches(store, ops)
    got: list[CommittedOp] = []
    since = 0
    while True:
        page = await store.history(since, 37)
        if not page:
            break
        assert len(page) <= 37
        got.extend(page)
        since = page[-1].v
    assert got == ops
    assert await store.history(100, 5) == ops[100:105]
    assert await store.history(-5, 3) == ops[:3]
    assert await store.history(333, 10) == []
    assert await store.history(1000, 10) == []
    assert await store.history(10, 0) == []
    assert [o.history_item() for o in await store.history(331, 10)] == [o.history_item() for o in ops[331:]]
    await store.close()
    # Fresh process: the sparse index is empty, pages are found by segment name.
    store, _ = await make_storage(segment_ops=50).open("nb1", 0)
    assert await store.history(260, 80) == ops[260:333]
    await store.close()


async def test_load_version_equals_replay(make_storage: Factory) -> None:
    storage = make_storage(segment_ops=40, snapshot_every=25)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(260)
    nb = Notebook()
    for op in ops:
        await store.append([op])
        nb = apply_op(nb, op.op, op.v)
        if store.snapshot_due(op.v):
            await store.write_snapshot(nb, op.v)
    for v in [0, 1, 2, 3, 24, 25, 26, 49, 50, 99, 100, 101, 137, 199, 200, 201, 250, 259, 260]:
        assert await store.load_version(v) == replay_to(ops, v), v
    for bad in (-1, 261):
        with pytest.raises(StorageError) as e:
            await store.load_version(bad)
        assert e.value.code == "version_not_found"
    await store.close()


async def test_snapshot_due_by_count_and_time(make_storage: Factory) -> None:
    now = [0.0]
    storage = make_storage(snapshot_every=10, snapshot_seconds=5.0, clock=lambda: now[0])
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(30)
    await store.append(ops[:9])
    assert not store.snapshot_due(9)
    await store.append(ops[9:10])
    assert store.snapshot_due(10)
    assert not store.snapshot_due(11)  # not durable yet
    await store.write_snapshot(replay_to(ops, 10), 10)
    assert not store.snapshot_due(10)
    await store.append(ops[10:12])
    assert not store.snapshot_due(12)
    now[0] = 6.0
    assert store.snapshot_due(12)  # time passed and there are new ops
    await store.write_snapshot(replay_to(ops, 12), 12)
    now[0] = 20.0
    assert not store.snapshot_due(12)  # time passed but nothing new
    with pytest.raises(StorageError) as e:
        await store.write_snapshot(replay_to(ops, 12), 13)
    assert e.value.code == "bad_snapshot"
    await store.close()


async def test_retention_keeps_last_k_milestones(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, snapshot_every=100, keep_snapshots=2, segment_ops=50)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 30)
    ops = gen_ops(650)
    nb = Notebook()
    for op in ops:
        await store.append([op])
        nb = apply_op(nb, op.op, op.v)
        if store.snapshot_due(op.v):
            await store.write_snapshot(nb, op.v)
    d = tmp_path / "notebooks" / "nb1"
    assert sorted(p.name for p in (d / "snapshots").iterdir()) == [f"{500:020d}.snap", f"{600:020d}.snap"]
    segs = sorted(int(p.stem) for p in (d / "log").iterdir())
    assert segs[0] <= 501 and segs[0] > 400  # the log after the oldest kept milestone stays
    for v in (500, 543, 600, 650):
        assert await store.load_version(v) == replay_to(ops, v)
    assert await store.load_version(0) == Notebook()  # initial.json is always kept
    for v in (1, 10, 399):
        with pytest.raises(StorageError) as e:
            await store.load_version(v)
        assert e.value.code == "version_not_found"
    with pytest.raises(StorageError) as e:
        await store.history(0, 10)
    assert e.value.code == "version_not_found"
    assert await store.history(500, 3) == ops[500:503]
    await store.close()
    store, rec = await FileStorage(tmp_path, keep_snapshots=2, segment_ops=50).open("nb1", 30)
    assert rec.version == 650 and rec.notebook == nb and rec.tail == ops[-30:]
    await store.close()


async def test_default_retention_keeps_everything(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, snapshot_every=50, segment_ops=30)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(300)
    nb = Notebook()
    for op in ops:
        await store.append([op])
        nb = apply_op(nb, op.op, op.v)
        if store.snapshot_due(op.v):
            await store.write_snapshot(nb, op.v)
    assert len(list((tmp_path / "notebooks" / "nb1" / "snapshots").iterdir())) == 6
    assert await store.history(0, 1000) == ops
    assert await store.load_version(7) == replay_to(ops, 7)
    await store.close()


async def test_snapshot_written_while_appends_continue(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, snapshot_every=40, segment_ops=64)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 20)
    ops = gen_ops(600)
    state: dict[str, Any] = {"nb": Notebook(), "v": 0}
    snapshots_written: list[int] = []
    overlapped: list[bool] = []

    async def room() -> None:
        i = 0
        rng = random.Random(3)
        while i < len(ops):
            batch = ops[i : i + rng.choice([1, 3, 8])]
            nb = state["nb"]
            for op in batch:
                nb = apply_op(nb, op.op, op.v)
            await store.append(batch)
            state["nb"], state["v"] = nb, batch[-1].v
            i += len(batch)
            await trio.lowlevel.checkpoint()

    async def snapshotter() -> None:
        while state["v"] < len(ops):
            nb, v = state["nb"], state["v"]
            if store.snapshot_due(v):
                await store.write_snapshot(nb, v)  # runs in a thread while `room` keeps appending
                snapshots_written.append(v)
                overlapped.append(state["v"] > v)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(room)
        nursery.start_soon(snapshotter)
    assert len(snapshots_written) >= 3
    assert any(overlapped)  # appends were committed while a snapshot was being written
    await store.close()
    store, rec = await FileStorage(tmp_path).open("nb1", 20)
    assert rec.version == 600 and rec.notebook == replay_to(ops, 600) and rec.tail == ops[-20:]
    for v in snapshots_written:
        assert await store.load_version(v) == replay_to(ops, v)
    await store.close()


async def test_memory_injected_failure_poisons(tmp_path: Path) -> None:
    storage = MemoryStorage()
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(5)
    await store.append(ops[:2])
    storage.inject_append_failure("nb1")
    for batch in (ops[2:3], ops[2:3]):
        with pytest.raises(StorageError) as e:
            await store.append(batch)
        assert e.value.code == "storage_failed"
    assert store.poisoned
    await store.close()
    store, rec = await storage.open("nb1", 10)
    assert rec.version == 2 and rec.tail == ops[:2]
    await store.close()


async def test_segments_roll_by_bytes_and_are_named_by_first_version(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, segment_ops=10_000, segment_bytes=2000)
    await storage.create(info(), Notebook())
    store, _ = await storage.open("nb1", 10)
    ops = gen_ops(120)
    await append_in_batches(store, ops)
    await store.close()
    segs = sorted((tmp_path / "notebooks" / "nb1" / "log").iterdir())
    assert len(segs) > 3
    firsts = [int(p.stem) for p in segs]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    for p in segs[:-1]:
        assert p.stat().st_size >= 2000  # a segment is sealed once it reaches the size
    store, rec = await FileStorage(tmp_path).open("nb1", 200)
    assert rec.tail == ops and await store.history(0, 1000) == ops
    await store.close()
