"""`Storage` in memory, for fast tests of the room: the same semantics as `FileStorage`, no disk.

Same promises and errors as the file storage (history paging, `load_version` through milestone
snapshots plus replay, `version_not_found`, `already_open`, `bad_append`, poisoning), except
that "durable" means "kept in this object": a new `open()` of the same `MemoryStorage` sees
everything appended, like a restart sees the disk. Retention is always "keep everything".

Fault injection: `inject_append_failure(id)` makes the next append of that notebook raise
`StorageError("storage_failed")` and poison its store, as a failing disk would.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import trio

from engine.ot.model import Notebook
from engine.records import CommittedOp
from engine.storage.base import (
    NotebookExists,
    NotebookInfo,
    NotebookNotFound,
    Recovered,
    StorageError,
    check_record,
)
from engine.storage.files import check_id, replay


@dataclass(slots=True)
class _Entry:
    info: NotebookInfo
    initial: Notebook
    ops: list[CommittedOp] = field(default_factory=list)  # ops[i].v == i + 1
    snapshots: dict[int, Notebook] = field(default_factory=dict)
    fail_next: bool = False


class MemoryStorage:
    """`Storage` kept in dicts. `snapshot_every`/`snapshot_seconds`/`clock` as in `FileStorage`."""

    def __init__(
        self,
        *,
        snapshot_every: int = 1000,
        snapshot_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.clock = clock
        self._notebooks: dict[str, _Entry] = {}
        self._open: set[str] = set()
        self._records: dict[str, tuple[bytes, int]] = {}  # key -> (value, expires)

    def inject_append_failure(self, notebook_id: str) -> None:
        """The next append to `notebook_id` fails with `storage_failed` (and poisons the store)."""
        self._get(notebook_id).fail_next = True

    def _get(self, notebook_id: str) -> _Entry:
        entry = self._notebooks.get(check_id(notebook_id))
        if entry is None:
            raise NotebookNotFound(notebook_id)
        return entry

    async def create(self, info: NotebookInfo, notebook: Notebook) -> None:
        if check_id(info.id) in self._notebooks:
            raise NotebookExists(info.id)
        self._notebooks[info.id] = _Entry(info=replace(info), initial=notebook)

    async def info(self, notebook_id: str) -> NotebookInfo:
        return replace(self._get(notebook_id).info)

    async def update_info(self, info: NotebookInfo) -> None:
        self._get(info.id).info = replace(info)

    async def list(self, after: str | None, limit: int) -> list[NotebookInfo]:
        ids = sorted(i for i in self._notebooks if after is None or i > after)
        return [replace(self._notebooks[i].info) for i in ids[: max(limit, 0)]]

    async def delete(self, notebook_id: str) -> None:
        self._get(notebook_id)
        del self._notebooks[notebook_id]

    async def owner_elsewhere(self, notebook_id: str) -> bool:
        """Always False: one process owns this storage."""
        return False

    async def open(self, notebook_id: str, window: int) -> tuple[MemoryNotebookStore, Recovered]:
        entry = self._get(notebook_id)
        if notebook_id in self._open:
            raise StorageError("already_open", f"notebook {notebook_id!r} is already open")
        store = MemoryNotebookStore(self, notebook_id, entry)
        head = len(entry.ops)
        base_v, notebook = store._base(head)
        notebook = replay(notebook, entry.ops[base_v:head], base_v)
        window = max(window, 0)
        tail = entry.ops[head - window : head] if window else []
        self._open.add(notebook_id)
        return store, Recovered(notebook=notebook, version=head, tail=list(tail))


    async def put_record(self, key: str, value: bytes, expires: int) -> None:
        check_record(key, value)
        self._records[key] = (bytes(value), expires)
        if len(self._records) % 1024 == 0:  # forget expired records now and then
            now = int(time.time() * 1000)
            for k in [k for k, (_, exp) in self._records.items() if exp <= now]:
                del self._records[k]

    async def get_record(self, key: str, now: int) -> bytes | None:
        found = self._records.get(key)
        return found[0] if found is not None and found[1] > now else None


class MemoryNotebookStore:
    """`NotebookStore` over a `MemoryStorage` entry."""

    def __init__(self, storage: MemoryStorage, notebook_id: str, entry: _Entry) -> None:
        self.storage = storage
        self.notebook_id = notebook_id
        self.entry = entry
        self.last_snapshot = max(entry.snapshots, default=0)
        self._last_snapshot_time = storage.clock()
        self._poisoned = False
        self._closed = False

    @property
    def head(self) -> int:
        return len(self.entry.ops)

    @property
    def poisoned(self) -> bool:
        return self._poisoned

    def _base(self, version: int) -> tuple[int, Notebook]:
        """Newest snapshot at or before `version`, else the initial content."""
        versions = sorted(self.entry.snapshots)
        i = bisect.bisect_right(versions, version)
        if i == 0:
            return 0, self.entry.initial
        v = versions[i - 1]
        return v, self.entry.snapshots[v]

    async def append(self, records: Sequence[CommittedOp]) -> None:
        if self._closed:
            raise StorageError("closed", f"store of {self.notebook_id!r} is closed")
        if self._poisoned:
            raise StorageError("storage_failed", "store refuses writes after an earlier failure")
        if self.entry.fail_next:
            self.entry.fail_next = False
            self._poisoned = True
            raise StorageError("storage_failed", "injected append failure")
        head = self.head
        for k, r in enumerate(records):
            if r.v != head + 1 + k:
                raise StorageError("bad_append", f"append of version {r.v} where {head + 1 + k} comes next")
        self.entry.ops.extend(records)

    def snapshot_due(self, version: int) -> bool:
        if version <= self.last_snapshot or version > self.head:
            return False
        if version - self.last_snapshot >= self.storage.snapshot_every:
            return True
        return self.storage.clock() - self._last_snapshot_time >= self.storage.snapshot_seconds

    async def write_snapshot(self, notebook: Notebook, version: int) -> None:
        if version > self.head:
            raise StorageError("bad_snapshot", f"snapshot at {version} is past the durable head {self.head}")
        self._last_snapshot_time = self.storage.clock()
        if version <= self.last_snapshot:
            return
        self.entry.snapshots[version] = notebook
        self.last_snapshot = version

    async def load_version(self, version: int) -> Notebook:
        head = self.head
        if not 0 <= version <= head:
            raise StorageError("version_not_found", f"version {version} does not exist (head is {head})")
        base_v, notebook = self._base(version)
        return replay(notebook, self.entry.ops[base_v:version], base_v)

    async def history(self, since: int, limit: int) -> list[CommittedOp]:
        since = max(since, 0)
        return self.entry.ops[since : since + max(limit, 0)]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.storage._open.discard(self.notebook_id)

    async def wait_lost(self) -> None:
        """Never returns: nobody else can take this notebook."""
        await trio.sleep_forever()
