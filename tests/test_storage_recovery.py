"""Crash and fault recovery of the file storage: torn tails, bit flips, bad snapshots, a failing disk.

Everything runs on real files in tmp_path; faults are injected through a `Disk` subclass, and
crashes are simulated by editing the files the way a crash (or a bad disk) would leave them.
"""

from __future__ import annotations

import errno
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ot.components import apply_op
from engine.ot.model import Notebook
from engine.records import CommittedOp
from engine.storage.base import NotebookInfo, StorageError
from engine.storage.disk import Disk
from engine.storage.files import FileStorage
from engine.storage.oplog import encode_record


def gen_ops(n: int, *, cells: int = 3, seed: int = 11) -> list[CommittedOp]:
    """`n` valid ops (versions 1..n) on an empty notebook: inserts, then small text edits."""
    rng = random.Random(seed)
    lengths = [0] * cells
    out: list[CommittedOp] = []
    for v in range(1, n + 1):
        if v <= cells:
            op: list[dict[str, Any]] = [
                {
                    "t": "cell_insert",
                    "id": f"c{v}",
                    "pos": f"p{v}",
                    "cell": {"cell_type": "markdown", "source": ""},
                }
            ]
        else:
            i = rng.randrange(cells)
            at = rng.randrange(lengths[i] + 1)
            op = [{"t": "text", "id": f"c{i + 1}", "ops": [at, "ab"]}]
            lengths[i] += 2
        out.append(CommittedOp(v=v, client="k", seq=v, user="u", time=v, op=op))
    return out


def replay_to(ops: list[CommittedOp], version: int) -> Notebook:
    nb = Notebook()
    for op in ops[:version]:
        nb = apply_op(nb, op.op, op.v)
    return nb


class FaultyDisk(Disk):
    """Raises `OSError(ENOSPC)` on the Nth write / fsync after being armed; can write part first."""

    def __init__(self) -> None:
        self.fail_write_in: int | None = None
        self.fail_fsync_in: int | None = None
        self.partial: int = 0  # bytes actually written by the failing write
        self.fail_truncate = False

    @staticmethod
    def _due(n: int | None) -> tuple[int | None, bool]:
        if n is None:
            return None, False
        return (None, True) if n <= 1 else (n - 1, False)

    def write(self, fd: int, data: bytes, offset: int) -> None:
        self.fail_write_in, fail = self._due(self.fail_write_in)
        if fail:
            if self.partial:
                super().write(fd, data[: self.partial], offset)
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        super().write(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.fail_fsync_in, fail = self._due(self.fail_fsync_in)
        if fail:
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        self.fail_fsync_in, fail = self._due(self.fail_fsync_in)
        if fail:
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().fsync_dir(path)

    def truncate(self, fd: int, size: int) -> None:
        if self.fail_truncate:
            raise OSError(errno.EIO, "Input/output error (injected)")
        super().truncate(fd, size)


INFO = NotebookInfo(id="nb", name="n", created=0, updated=0)


async def make(tmp_path: Path, ops: list[CommittedOp], *, batch: int = 1, **kw: Any) -> FileStorage:
    """A notebook `nb` holding `ops`, closed again (snapshots as `snapshot_due` says)."""
    storage = FileStorage(tmp_path, **kw)
    await storage.create(INFO, Notebook())
    store, _ = await storage.open("nb", 10)
    nb = Notebook()
    for i in range(0, len(ops), batch):
        chunk = ops[i : i + batch]
        await store.append(chunk)
        for op in chunk:
            nb = apply_op(nb, op.op, op.v)
        if store.snapshot_due(chunk[-1].v):
            await store.write_snapshot(nb, chunk[-1].v)
    await store.close()
    return storage


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "notebooks" / "nb" / "log").iterdir())


def snapshot_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "notebooks" / "nb" / "snapshots").iterdir())


async def reopen(tmp_path: Path, window: int = 10, **kw: Any) -> tuple[int, Notebook, list[CommittedOp]]:
    store, rec = await FileStorage(tmp_path, **kw).open("nb", window)
    await store.close()
    return rec.version, rec.notebook, rec.tail


# -- recovery equals replay ------------------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [1, 7, 1000])
async def test_recovery_equals_replay_of_all_ops(tmp_path: Path, snapshot_every: int) -> None:
    ops = gen_ops(150)
    await make(tmp_path, ops, batch=4, snapshot_every=snapshot_every, segment_ops=32)
    version, nb, tail = await reopen(tmp_path, window=25)
    assert version == 150 and nb == replay_to(ops, 150) and tail == ops[-25:]


# -- torn and corrupt tails ------------------------------------------------------------------------


async def test_torn_tail_at_every_byte_is_cut(tmp_path: Path) -> None:
    ops = gen_ops(12)
    await make(tmp_path, ops)
    [seg] = segments(tmp_path)
    full = seg.read_bytes()
    last_start = len(full) - len(encode_record(ops[-1]))
    for cut in range(last_start, len(full)):
        seg.write_bytes(full[:cut])
        version, nb, tail = await reopen(tmp_path)
        assert version == 11 and nb == replay_to(ops, 11) and tail == ops[1:11], cut
        assert seg.stat().st_size == last_start  # the torn bytes are gone, not skipped
    # After a cut the log takes new appends where the torn record was.
    store, _ = await FileStorage(tmp_path).open("nb", 10)
    await store.append(ops[11:])
    await store.close()
    assert seg.read_bytes() == full
    assert (await reopen(tmp_path))[0] == 12


async def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    ops = gen_ops(5)
    await make(tmp_path, ops)
    [seg] = segments(tmp_path)
    size = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(b"\x00" * 4096)  # a file extended by a crash but never written
    assert (await reopen(tmp_path))[0] == 5
    assert seg.stat().st_size == size


async def test_bit_flip_in_last_record_is_cut(tmp_path: Path) -> None:
    ops = gen_ops(8)
    await make(tmp_path, ops)
    [seg] = segments(tmp_path)
    full = seg.read_bytes()
    last_start = len(full) - len(encode_record(ops[-1]))
    for pos in range(last_start, len(full)):
        for bit in (0x01, 0x80):
            data = bytearray(full)
            data[pos] ^= bit
            seg.write_bytes(bytes(data))
            version, nb, _ = await reopen(tmp_path)
            assert version == 7 and nb == replay_to(ops, 7), (pos, bit)
            assert seg.stat().st_size == last_start


async def test_bit_flip_in_middle_record_is_log_corrupt(tmp_path: Path) -> None:
    ops = gen_ops(8)
    await make(tmp_path, ops)
    [seg] = segments(tmp_path)
    full = seg.read_bytes()
    start = sum(len(encode_record(o)) for o in ops[:4])
    end = start + len(encode_record(ops[4]))
    for pos in range(start, end):
        data = bytearray(full)
        data[pos] ^= 0x04
        seg.write_bytes(bytes(data))
        with pytest.raises(StorageError) as e:
            await FileStorage(tmp_path).open("nb", 10)
        assert e.value.code == "log_corrupt"
        assert str(seg) in e.value.message and f"offset {start}" in e.value.message, (pos, e.value.message)
        assert seg.read_bytes() == bytes(data)  # evidence is left alone, nothing truncated


async def test_missing_record_is_a_version_gap(tmp_path: Path) -> None:
    ops = gen_ops(8)
    await make(tmp_path, ops)
    [seg] = segments(tmp_path)
    full = seg.read_bytes()
    start = sum(len(encode_record(o)) for o in ops[:3])
    seg.write_bytes(full[:start] + full[start + len(encode_record(ops[3])) :])
    with pytest.raises(StorageError) as e:
        await FileStorage(tmp_path).open("nb", 10)
    assert e.value.code == "log_corrupt" and "version 5 where 4" in e.value.message


async def test_missing_or_damaged_sealed_segment_is_log_corrupt(tmp_path: Path) -> None:
    ops = gen_ops(100)
    await make(tmp_path, ops, batch=5, segment_ops=20)
    segs = segments(tmp_path)
    assert len(segs) == 5
    # A torn end in a sealed segment is not a tail: it was fsync'd before the next one started.
    data = segs[1].read_bytes()
    segs[1].write_bytes(data[:-3])
    with pytest.raises(StorageError) as e:
        await FileStorage(tmp_path).open("nb", 10)
    assert e.value.code == "log_corrupt" and segs[1].name in e.value.message
    segs[1].write_bytes(data)
    segs[2].unlink()
    with pytest.raises(StorageError) as e:
        await FileStorage(tmp_path).open("nb", 10)
    assert e.value.code == "log_corrupt" and "segment starts at version 61" in e.value.message


async def test_corruption_in_old_segment_is_reported_by_history(tmp_path: Path) -> None:
    ops = gen_ops(100)
    await make(tmp_path, ops, batch=5, segment_ops=20, snapshot_every=50)
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[len(encode_record(ops[0])) + 30] ^= 0x10  # inside version 2's record
    seg.write_bytes(bytes(data))
    store, rec = await FileStorage(tmp_path).open("nb", 10)  # recovery never reads that segment
    assert rec.version == 100
    assert await store.history(50, 5) == ops[50:55]
    with pytest.raises(StorageError) as e:
        await store.history(0, 10)
    assert e.value.code == "log_corrupt" and seg.name in e.value.message
    with pytest.raises(StorageError) as e:
        await store.load_version(10)
    assert e.value.code == "log_corrupt"
    assert await store.load_version(60) == replay_to(ops, 60)
    await store.close()


# -- snapshots -------------------------------------------------------------------------------------


async def test_corrupt_newest_snapshot_falls_back(tmp_path: Path) -> None:
    ops = gen_ops(95)
    await make(tmp_path, ops, snapshot_every=30)
    snaps = snapshot_files(tmp_path)
    assert [int(p.stem) for p in snaps] == [30, 60, 90]
    data = bytearray(snaps[-1].read_bytes())
    data[len(data) // 2] ^= 0x20
    snaps[-1].write_bytes(bytes(data))
    version, nb, _ = await reopen(tmp_path)
    assert version == 95 and nb == replay_to(ops, 95)
    snaps[-2].write_bytes(snaps[-2].read_bytes()[:50])  # truncated
    snaps[0].write_bytes(b"")
    version, nb, _ = await reopen(tmp_path)
    assert version == 95 and nb == replay_to(ops, 95)  # initial.json + the whole log
    store, _ = await FileStorage(tmp_path).open("nb", 10)
    assert await store.load_version(91) == replay_to(ops, 91)
    await store.close()


async def test_interrupted_snapshot_write_leaves_old_state(tmp_path: Path) -> None:
    ops = gen_ops(40)
    await make(tmp_path, ops, snapshot_every=30)
    snap_dir = tmp_path / "notebooks" / "nb" / "snapshots"
    (snap_dir / ".tmp-00000000000000000040.snap-dead").write_bytes(b"half a snapsh")
    version, nb, _ = await reopen(tmp_path)
    assert version == 40 and nb == replay_to(ops, 40)
    assert [p.name for p in snapshot_files(tmp_path)] == [f"{30:020d}.snap"]


async def test_snapshot_beyond_log_end_is_log_corrupt(tmp_path: Path) -> None:
    ops = gen_ops(30)
    await make(tmp_path, ops, snapshot_every=30)
    [seg] = segments(tmp_path)
    seg.write_bytes(seg.read_bytes()[:-5])  # the head record was durable, then the disk lost it
    with pytest.raises(StorageError) as e:
        await FileStorage(tmp_path).open("nb", 10)
    assert e.value.code == "log_corrupt"


async def test_failed_snapshot_write_does_not_poison(tmp_path: Path) -> None:
    disk = FaultyDisk()
    storage = FileStorage(tmp_path, disk=disk, snapshot_every=5)
    await storage.create(INFO, Notebook())
    store, _ = await storage.open("nb", 10)
    ops = gen_ops(12)
    await store.append(ops[:5])
    disk.fail_fsync_in = 1
    with pytest.raises(StorageError) as e:
        await store.write_snapshot(replay_to(ops, 5), 5)
    assert e.value.code == "storage_failed"
    assert not store.poisoned and snapshot_files(tmp_path) == []
    await store.append(ops[5:])
    await store.write_snapshot(replay_to(ops, 12), 12)
    await store.close()
    assert (await reopen(tmp_path))[:2] == (12, replay_to(ops, 12))


# -- a failing disk --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        "write",  # ENOSPC, nothing written
        "partial_write",  # ENOSPC after part of the batch reached the file
        "fsync",  # EIO from fsync after the write
        "partial_write_no_truncate",  # and the cleanup truncate fails too
        "roll_fsync_dir",  # failing directory fsync when a new segment starts
    ],
)
async def test_failing_disk_poisons_and_reopen_has_the_durable_prefix(tmp_path: Path, fault: str) -> None:
    disk = FaultyDisk()
    storage = FileStorage(tmp_path, disk=disk, segment_ops=10)
    await storage.create(INFO, Notebook())
    store, _ = await storage.open("nb", 100)
    ops = gen_ops(30)
    await store.append(ops[:10])  # fills the first segment
    if fault != "roll_fsync_dir":
        await store.append(ops[10:12])  # now in the second segment
    durable = store.head
    if fault == "write":
        disk.fail_write_in = 1
    elif fault == "partial_write":
        disk.fail_write_in, disk.partial = 1, 50
    elif fault == "fsync":
        disk.fail_fsync_in = 1
    elif fault == "partial_write_no_truncate":
        disk.fail_write_in, disk.partial, disk.fail_truncate = 1, 7, True
    else:
        disk.fail_fsync_in = 1  # the directory fsync of the new segment
    with pytest.raises(StorageError) as e:
        await store.append(ops[durable : durable + 3])
    assert e.value.code == "storage_failed"
    assert store.poisoned and store.head == durable
    disk.fail_write_in = disk.fail_fsync_in = None
    disk.fail_truncate = False
    with pytest.raises(StorageError) as e:  # poisoned: even a healthy disk is not trusted again
        await store.append(ops[durable : durable + 1])
    assert e.value.code == "storage_failed"
    assert await store.history(0, 100) == ops[:durable]  # reads of durable data still work
    await store.close()

    version, nb, tail = await reopen(tmp_path, window=100)
    assert version == durable and nb == replay_to(ops, durable) and tail == ops[:durable]
    store, _ = await FileStorage(tmp_path).open("nb", 10)
    await store.append(ops[durable:])
    await store.close()
    version, nb, _ = await reopen(tmp_path)
    assert version == 30 and nb == replay_to(ops, 30)


async def test_create_on_failing_disk_leaves_nothing(tmp_path: Path) -> None:
    disk = FaultyDisk()
    storage = FileStorage(tmp_path, disk=disk)
    disk.fail_fsync_in = 2
    with pytest.raises(StorageError) as e:
        await storage.create(INFO, Notebook())
    assert e.value.code == "storage_failed"
    assert list((tmp_path / "notebooks").iterdir()) == []
    await storage.create(INFO, Notebook())
    assert [i.id for i in await storage.list(None, 5)] == ["nb"]


# -- property: a crash anywhere after the last ack ---------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=20),
    snapshot_every=st.integers(1, 25),
    segment_ops=st.integers(2, 30),
    unacked=st.integers(0, 4),
    cut=st.floats(0.0, 1.0),
    spoil_snapshot=st.booleans(),
)
def test_crash_after_any_ack_recovers_every_acknowledged_op_once(
    batches: list[int], snapshot_every: int, segment_ops: int, unacked: int, cut: float, spoil_snapshot: bool
) -> None:
    """Acked batches, then a crash while a further batch was half written (torn at any byte).

    Recovery holds every acknowledged op exactly once, in order, plus only whole records of the
    torn batch, and the document equals the replay of exactly those ops.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ops = gen_ops(sum(batches) + unacked)

        async def scenario() -> tuple[int, int, Notebook, list[CommittedOp]]:
            storage = FileStorage(root, snapshot_every=snapshot_every, segment_ops=segment_ops)
            await storage.create(INFO, Notebook())
            store, _ = await storage.open("nb", 1000)
            nb, v = Notebook(), 0
            for size in batches:
                batch = ops[v : v + size]
                await store.append(batch)
                for op in batch:
                    nb = apply_op(nb, op.op, op.v)
                v += size
                if store.snapshot_due(v):
                    await store.write_snapshot(nb, v)
            await store.close()
            # The crash: part of an unacknowledged batch reached the newest segment.
            torn = b"".join(encode_record(op) for op in ops[v:])
            seg = segments(root)[-1]
            with seg.open("ab") as f:
                f.write(torn[: int(len(torn) * cut)])
            snaps = snapshot_files(root)
            if spoil_snapshot and snaps:
                snaps[-1].write_bytes(snaps[-1].read_bytes()[:-1])
            store, rec = await FileStorage(root).open("nb", 1000)
            await store.close()
            return v, rec.version, rec.notebook, rec.tail

        acked, version, nb, tail = trio.run(scenario)
        assert acked <= version <= len(ops)
        assert nb == replay_to(ops, version)
        assert tail == ops[:version]
