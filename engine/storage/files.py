"""The default storage: one directory per notebook under the data dir.

Layout::

    <data_dir>/notebooks/<id>/info.json        NotebookInfo as JSON (replaced atomically)
    <data_dir>/notebooks/<id>/initial.json     {"version": 0, "state": notebook_to_state(nb)}
    <data_dir>/notebooks/<id>/log/*.log        the op log (engine.storage.oplog)
    <data_dir>/notebooks/<id>/snapshots/*.snap milestone snapshots (engine.storage.snapshots)
    <data_dir>/records/<sha256 of key>         one record (engine.storage.base, `put_record`)

Promises:
- `append` returns only when the batch is written and fsync'd (one fsync per batch); a crash at
  any moment loses nothing that `append` acknowledged and never replays a torn write.
- Creation and deletion are atomic as seen by `list`/`info`/`open`: a notebook is built in a
  `.tmp-*` directory and renamed into place; deletion renames it to `.trash-*` (durably) before
  removing files. Leftovers of a crash are removed when the storage is constructed.
- Any `OSError` on the write path becomes `StorageError("storage_failed")`; after a failed
  append the store is poisoned (every later append raises) and the log is left consistent.
  Corrupt data is `StorageError("log_corrupt")` (the notebook must not be served). Nothing here
  raises anything but `StorageError` for disk trouble, so the process never crashes on it.
- All blocking file work (including fsync, snapshot encoding and recovery replay) runs in
  `trio.to_thread.run_sync`; the event loop is never blocked on the disk.
- Notebook ids are checked against `^[A-Za-z0-9_-]{1,64}$` before any path is built from them.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from engine.metrics import FSYNC_SECONDS
from engine.ot.components import apply_op
from engine.ot.model import Notebook, notebook_from_state, notebook_to_state
from engine.records import CommittedOp
from engine.storage.base import (
    NotebookExists,
    NotebookInfo,
    NotebookNotFound,
    Recovered,
    StorageError,
    check_record,
    derived_incarnation,
)
from engine.storage.disk import Disk, cleanup_temp
from engine.storage.oplog import OpLog
from engine.storage.snapshots import SnapshotDir

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
T = TypeVar("T")
NEWEST = 1 << 62  # "any version" for snapshot lookups


def check_id(notebook_id: str) -> str:
    """`notebook_id` if it matches the id pattern; else `StorageError("invalid_id")`.

    Callers validate ids already; this is the last line before an id becomes a path.
    """
    if not isinstance(notebook_id, str) or not ID_RE.fullmatch(notebook_id):
        raise StorageError("invalid_id", f"invalid notebook id {notebook_id!r}")
    return notebook_id


def replay(notebook: Notebook, ops: Sequence[CommittedOp], after: int) -> Notebook:
    """Apply the ops with `v > after` in order; a failure is `log_corrupt` (the log was accepted once)."""
    for op in ops:
        if op.v <= after:
            continue
        try:
            notebook = apply_op(notebook, op.op, op.v)
        except Exception as e:
            raise StorageError("log_corrupt", f"replaying logged version {op.v} failed: {e}") from e
    return notebook


def _info_bytes(info: NotebookInfo) -> bytes:
    return orjson.dumps(dataclasses.asdict(info))


def _info_from(data: bytes) -> NotebookInfo:
    d: Any = orjson.loads(data)
    return NotebookInfo(
        id=str(d["id"]),
        name=str(d["name"]),
        created=int(d["created"]),
        updated=int(d["updated"]),
        version=int(d.get("version", 0)),
        incarnation=str(d.get("incarnation") or derived_incarnation(int(d["created"]))),
    )


# A record file: expires (epoch ms, i64), key length (u32), the key as UTF-8, then the value.
_RECORD_HEAD = struct.Struct("<qI")
SWEEP_EVERY = 1024  # puts between two sweeps of expired record files


def _record_name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _record_bytes(key: str, value: bytes, expires: int) -> bytes:
    raw_key = key.encode("utf-8", "surrogatepass")
    return _RECORD_HEAD.pack(expires, len(raw_key)) + raw_key + value


def _record_from(data: bytes, key: str) -> tuple[bytes, int] | None:
    """(value, expires) of a record file's bytes, or None if it holds another key or is damaged."""
    if len(data) < _RECORD_HEAD.size:
        return None
    expires, key_len = _RECORD_HEAD.unpack_from(data)
    start = _RECORD_HEAD.size
    if data[start : start + key_len] != key.encode("utf-8", "surrogatepass"):
        return None
    return data[start + key_len :], expires


class FileStorage:
    """`Storage` over a data dir (contract §1). Construct once per process.

    `snapshot_every`/`snapshot_seconds`: when `snapshot_due` says yes. `keep_snapshots`: None
    keeps every milestone and the whole log (default); K keeps the newest K milestones and trims
    the log behind the oldest kept one (see `engine.storage.snapshots`). `segment_ops` /
    `segment_bytes`: when the op log starts a new segment. `disk`: the `Disk` every write goes
    through (fault injection in tests). `clock`: monotonic seconds, for the snapshot timer.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        snapshot_every: int = 1000,
        snapshot_seconds: float = 60.0,
        keep_snapshots: int | None = None,
        segment_ops: int = 10_000,
        segment_bytes: int = 16 << 20,
        disk: Disk | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if snapshot_every < 1 or (keep_snapshots is not None and keep_snapshots < 1):
            raise ValueError("snapshot_every and keep_snapshots must be >= 1")
        self.root = Path(data_dir) / "notebooks"
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.keep_snapshots = keep_snapshots
        self.segment_ops = segment_ops
        self.segment_bytes = segment_bytes
        self.disk = disk if disk is not None else Disk()
        self.clock = clock
        self._open: set[str] = set()
        self.root.mkdir(parents=True, exist_ok=True)
        self.records = Path(data_dir) / "records"
        self.records.mkdir(exist_ok=True)
        self._puts = 0
        self._remove_leftovers()
        cleanup_temp(self.records)
        self._sweep_records(int(time.time() * 1000))

    # -- helpers -------------------------------------------------------------------------------

    def _dir(self, notebook_id: str) -> Path:
        return self.root / check_id(notebook_id)

    def _remove_leftovers(self) -> None:
        for name in os.listdir(self.root):
            if name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(self.root / name, ignore_errors=True)

    # -- Storage -------------------------------------------------------------------------------

    async def create(self, info: NotebookInfo, notebook: Notebook) -> None:
        """Create at version 0, atomically (all files or none); `NotebookExists` if taken."""
        final = self._dir(info.id)

        def work() -> None:
            if final.exists():
                raise NotebookExists(info.id)
            tmp = self.root / f".tmp-{info.id}-{secrets.token_hex(4)}"
            try:
                tmp.mkdir()
                (tmp / "log").mkdir()
                (tmp / "snapshots").mkdir()
                self.disk.write_file_atomic(tmp / "info.json", _info_bytes(info))
                state = orjson.dumps({"version": 0, "state": notebook_to_state(notebook)})
                self.disk.write_file_atomic(tmp / "initial.json", state)
                self.disk.fsync_dir(tmp / "log")
                self.disk.fsync_dir(tmp / "snapshots")
                self.disk.fsync_dir(tmp)
                try:
                    self.disk.replace(tmp, final)
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise NotebookExists(info.id) from None
                    raise
                self.disk.fsync_dir(self.root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

        await self._run(work)

    async def info(self, notebook_id: str) -> NotebookInfo:
        path = self._dir(notebook_id) / "info.json"

        def work() -> NotebookInfo:
            try:
                return _info_from(path.read_bytes())
            except FileNotFoundError:
                raise NotebookNotFound(notebook_id) from None
            except (ValueError, KeyError, TypeError) as e:
                raise StorageError("info_corrupt", f"{path} is unreadable: {e}") from e

        return await self._run(work)

    async def update_info(self, info: NotebookInfo) -> None:
        """Rewrite info.json atomically; `NotebookNotFound` if the notebook is gone."""
        d = self._dir(info.id)

        def work() -> None:
            if not d.is_dir():
                raise NotebookNotFound(info.id)
            self.disk.write_file_atomic(d / "info.json", _info_bytes(info))

        await self._run(work)

    async def list(self, after: str | None, limit: int) -> list[NotebookInfo]:
        """Notebooks with `id > after`, bytewise id order (ids are ASCII), at most `limit`."""

        def work() -> list[NotebookInfo]:
            names = sorted(
                n for n in os.listdir(self.root) if ID_RE.fullmatch(n) and (after is None or n > after)
            )
            out: list[NotebookInfo] = []
            for name in names:
                if len(out) >= limit:
                    break
                try:
                    out.append(_info_from((self.root / name / "info.json").read_bytes()))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # deleted meanwhile, or unreadable: not listable
            return out

        return await self._run(work)

    async def delete(self, notebook_id: str) -> None:
        """Rename to `.trash-*` durably (it vanishes at once), then remove the files.

        The room of the notebook should be closed first; its open files would keep working on
        the trashed directory until closed.
        """
        d = self._dir(notebook_id)

        def work() -> None:
            trash = self.root / f".trash-{notebook_id}-{secrets.token_hex(4)}"
            try:
                self.disk.replace(d, trash)
            except FileNotFoundError:
                raise NotebookNotFound(notebook_id) from None
            self.disk.fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

        await self._run(work)

    async def owner_elsewhere(self, notebook_id: str) -> bool:
        """Always False: one process owns this storage."""
        return False

    async def open(self, notebook_id: str, window: int) -> tuple[FileNotebookStore, Recovered]:
        """Recover the head state and open the log for appending.

        `NotebookNotFound` if absent; `StorageError("already_open")` if this process has it open
        (two writers would interleave the log); `log_corrupt` if the data cannot be trusted.
        """
        d = self._dir(notebook_id)
        if notebook_id in self._open:
            raise StorageError("already_open", f"notebook {notebook_id!r} is already open")
        self._open.add(notebook_id)
        try:
            store, recovered = await self._run(lambda: self._recover(notebook_id, d, window))
        except BaseException:
            self._open.discard(notebook_id)
            raise
        return store, recovered

    def _recover(self, notebook_id: str, d: Path, window: int) -> tuple[FileNotebookStore, Recovered]:
        if not (d / "info.json").is_file():
            raise NotebookNotFound(notebook_id)
        cleanup_temp(d)
        snaps = SnapshotDir(d / "snapshots", self.disk)
        snaps.clean()
        oplog = OpLog(d / "log", self.disk, segment_ops=self.segment_ops, segment_bytes=self.segment_bytes)
        found = snaps.newest_good(NEWEST)
        base_v, notebook = found if found is not None else (0, load_initial(d))
        window = max(window, 0)
        records = oplog.recover(max(1, base_v + 1 - window))
        if oplog.head < base_v:
            oplog.close()
            raise StorageError(
                "log_corrupt",
                f"op log of {notebook_id!r} ends at version {oplog.head}, before snapshot {base_v}",
            )
        if base_v < oplog.head and oplog.first_version() > base_v + 1:
            oplog.close()
            raise StorageError(
                "log_corrupt",
                f"ops {base_v + 1}..{oplog.first_version() - 1} of {notebook_id!r} are missing from the log",
            )
        notebook = replay(notebook, records, base_v)
        tail = records[-window:] if window else []
        store = FileNotebookStore(self, notebook_id, d, oplog, snaps, window, base_v)
        return store, Recovered(notebook=notebook, version=oplog.head, tail=tail)

    # -- records -------------------------------------------------------------------------------

    async def put_record(self, key: str, value: bytes, expires: int) -> None:
        """Write the record file atomically and durably (temp file, fsync, rename, dir fsync).
        Every `SWEEP_EVERY` puts, expired record files are removed (in the same worker thread)."""
        check_record(key, value)
        path = self.records / _record_name(key)
        data = _record_bytes(key, value, expires)
        self._puts += 1
        sweep = self._puts % SWEEP_EVERY == 0

        def work() -> None:
            self.disk.write_file_atomic(path, data)
            if sweep:
                self._sweep_records(int(time.time() * 1000))

        await self._run(work)

    async def get_record(self, key: str, now: int) -> bytes | None:
        """The record's value if present, intact and not expired at `now`; else None."""
        path = self.records / _record_name(key)

        def work() -> bytes | None:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            found = _record_from(data, key)
            return found[0] if found is not None and found[1] > now else None

        return await self._run(work)

    def _sweep_records(self, now: int) -> None:
        """Remove expired record files (blocking; best effort)."""
        for name in os.listdir(self.records):
            if name.startswith(".tmp-"):
                continue
            path = self.records / name
            try:
                with open(path, "rb") as f:
                    head = f.read(_RECORD_HEAD.size)
                if len(head) == _RECORD_HEAD.size and _RECORD_HEAD.unpack(head)[0] <= now:
                    path.unlink()
            except OSError:
                continue

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run blocking `fn` in a worker thread; `OSError` becomes `storage_failed`."""
        try:
            return await trio.to_thread.run_sync(fn)
        except OSError as e:
            raise StorageError("storage_failed", f"disk operation failed: {e}") from e

    def _closed(self, notebook_id: str) -> None:
        self._open.discard(notebook_id)


def load_initial(d: Path) -> Notebook:
    """The version-0 content of the notebook in directory `d`."""
    path = d / "initial.json"
    try:
        data: Any = orjson.loads(path.read_bytes())
        return notebook_from_state(data["state"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StorageError("snapshot_corrupt", f"{path} is unusable: {e}") from e


class FileNotebookStore:
    """`NotebookStore` of one open notebook. Only its room appends; reads may run concurrently."""

    def __init__(
        self,
        storage: FileStorage,
        notebook_id: str,
        directory: Path,
        oplog: OpLog,
        snaps: SnapshotDir,
        window: int,
        last_snapshot: int,
    ) -> None:
        self.storage = storage
        self.notebook_id = notebook_id
        self.dir = directory
        self.log = oplog
        self.snaps = snaps
        self.window = window
        self.last_snapshot = last_snapshot  # version of the newest snapshot (0: initial.json)
        self._last_snapshot_time = storage.clock()
        self._snapshotting = False
        self._closed = False
        self._lock = trio.Lock()  # serialises appends (and close) on the log's write handle

    @property
    def head(self) -> int:
        """The last durable version."""
        return self.log.head

    @property
    def poisoned(self) -> bool:
        """True once an append failed: every later append raises `storage_failed`."""
        return self.log.poisoned is not None

    async def append(self, records: Sequence[CommittedOp]) -> None:
        """Durable (written + ONE fsync) when this returns; `StorageError` otherwise.

        Not cancellable mid-write: a cancel waits for the worker thread, so the log's state is
        always known. `storage_failed` poisons the store.
        """
        batch = list(records)
        async with self._lock:
            if self._closed:
                raise StorageError("closed", f"store of {self.notebook_id!r} is closed")
            elapsed = await trio.to_thread.run_sync(self.log.append, batch)
        if batch:
            FSYNC_SECONDS.observe(elapsed)

    def snapshot_due(self, version: int) -> bool:
        """True when durable `version` (<= head) is `snapshot_every` past the last snapshot, or
        newer than it and `snapshot_seconds` have passed; False while a snapshot is being written."""
        if self._snapshotting or version <= self.last_snapshot or version > self.head:
            return False
        if version - self.last_snapshot >= self.storage.snapshot_every:
            return True
        return self.storage.clock() - self._last_snapshot_time >= self.storage.snapshot_seconds

    async def write_snapshot(self, notebook: Notebook, version: int) -> None:
        """Write the milestone at `version` (<= head) atomically, in a thread; then apply retention.

        A version at or below the last snapshot is a no-op. A disk error is `storage_failed`;
        it does not poison appends (the log alone is the truth), and the timer restarts.
        """
        if version > self.head:
            raise StorageError("bad_snapshot", f"snapshot at {version} is past the durable head {self.head}")
        if version <= self.last_snapshot or self._snapshotting:
            return
        self._snapshotting = True
        try:
            await self.storage._run(lambda: self._snapshot_sync(notebook, version))
            self.last_snapshot = version
        finally:
            self._snapshotting = False
            self._last_snapshot_time = self.storage.clock()

    def _snapshot_sync(self, notebook: Notebook, version: int) -> None:
        self.snaps.write(notebook, version)
        keep = self.storage.keep_snapshots
        if keep is not None:
            oldest = self.snaps.prune(keep)
            if oldest is not None:
                self.log.trim_through(min(oldest, self.log.head - self.window))

    async def load_version(self, version: int) -> Notebook:
        """Document at `version` (0..head): newest good snapshot <= version + log replay.

        `version_not_found` when out of range or trimmed away by retention.
        """
        head = self.head
        if not 0 <= version <= head:
            raise StorageError("version_not_found", f"version {version} does not exist (head is {head})")
        return await self.storage._run(lambda: self._load_sync(version))

    def _load_sync(self, version: int) -> Notebook:
        found = self.snaps.newest_good(version) if version > 0 else None
        base_v, notebook = found if found is not None else (0, load_initial(self.dir))
        if base_v == version:
            return notebook
        if self.log.first_version() > base_v + 1:
            raise StorageError("version_not_found", f"version {version} is older than the kept history")
        return replay(notebook, self.log.read(base_v + 1, version), base_v)

    async def history(self, since: int, limit: int) -> list[CommittedOp]:
        """Committed ops with `since < v <= head`, oldest first, at most `limit`.

        Reads only the segments that hold the page (seek by segment name and sparse index).
        `version_not_found` if `since + 1` was trimmed by retention.
        """
        head = self.head
        since = max(since, 0)
        if since >= head or limit <= 0:
            return []
        return await self.storage._run(lambda: self.log.read(since + 1, head, limit))

    async def close(self) -> None:
        """Close the log file; later appends raise `closed`. Idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.log.close()
            except OSError as e:
                log.warning("closing the op log of %s: %s", self.notebook_id, e)
            finally:
                self.storage._closed(self.notebook_id)

    async def wait_lost(self) -> None:
        """Never returns: nobody else can take this notebook."""
        await trio.sleep_forever()
