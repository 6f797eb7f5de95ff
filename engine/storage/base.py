"""The storage interface the engine talks to: files (default), memory (tests), PostgreSQL (several hosts).

Group commit: the room applies a batch of ops in memory, then awaits `append(batch)`; only when
that returns (the batch is durable) does it publish them. A `StorageError` from any call means
the notebook must stop accepting ops: nothing after the last successful `append` is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.ot.model import Notebook
from engine.records import CommittedOp


class StorageError(Exception):
    """A write, fsync or read failed, or stored data is corrupt. `code` is snake_case.

    Codes used by the implementations: `storage_failed` (an OSError on the write path; after
    a failed append the store is poisoned), `log_corrupt` (damaged log or snapshot/log mismatch:
    do not serve the notebook), `version_not_found` (out of range, or trimmed by retention),
    `notebook_not_found`, `notebook_exists`, `already_open`, `closed`, `bad_append` (versions
    not consecutive after the head), `bad_snapshot` (snapshot past the durable head),
    `snapshot_corrupt`, `info_corrupt`, `invalid_id`, `invalid_record`; shared stores
    (PostgreSQL) add `not_owner` (another host owns the notebook, or took it over: the room must
    close with 1012) and `store_unavailable` (the database cannot be reached).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Failure codes after which the notebook is (or soon will be) served by another host: rooms
# close with 1012 so clients reconnect at once, instead of 1011.
SERVED_ELSEWHERE = frozenset({"not_owner", "store_unavailable"})


class NotebookNotFound(StorageError):
    def __init__(self, notebook_id: str) -> None:
        super().__init__("notebook_not_found", f"notebook {notebook_id!r} does not exist")


class NotebookExists(StorageError):
    def __init__(self, notebook_id: str) -> None:
        super().__init__("notebook_exists", f"notebook {notebook_id!r} already exists")


def derived_incarnation(created: int) -> str:
    """The incarnation of a notebook stored before incarnations existed: stable, from `created`."""
    return f"c{created}"


@dataclass(slots=True)
class NotebookInfo:
    """What the summary shows; kept in the notebook's metadata file.

    `incarnation` names this life of the notebook id: a random string chosen at creation and never
    changed, so a notebook deleted and created again with the same id has a different one (user
    tokens are bound to it). Stores that hold none (data written before it existed) answer
    `derived_incarnation(created)`, which the empty default also becomes.
    """

    id: str
    name: str
    created: int  # epoch milliseconds
    updated: int  # epoch milliseconds (last committed op, or creation)
    version: int = 0
    incarnation: str = ""

    def __post_init__(self) -> None:
        if not self.incarnation:
            self.incarnation = derived_incarnation(self.created)


@dataclass(slots=True)
class Recovered:
    """An opened notebook: head document, head version and the newest committed ops."""

    notebook: Notebook
    version: int
    # The newest committed ops, oldest first, ending at `version` (at most `window` of them; fewer
    # when the notebook is younger). The document rebuilds its transform window and its
    # `(client, seq) -> v` dedupe table from them.
    tail: list[CommittedOp] = field(default_factory=list)


class NotebookStore(Protocol):
    """One open notebook's durable state. Only its room calls it (no concurrent appends)."""

    async def append(self, records: Sequence[CommittedOp]) -> None:
        """Write `records` (consecutive versions) and make them durable before returning."""
        ...

    def snapshot_due(self, version: int) -> bool:
        """Whether a snapshot at `version` should be written now (every N ops or T seconds)."""
        ...

    async def write_snapshot(self, notebook: Notebook, version: int) -> None:
        """Persist `notebook` as the state at `version` atomically; may trim the log behind it."""
        ...

    async def load_version(self, version: int) -> Notebook:
        """The document at any past `version` (0..head); `StorageError` code `version_not_found`."""
        ...

    async def history(self, since: int, limit: int) -> list[CommittedOp]:
        """Committed ops with `since < v`, oldest first, at most `limit`."""
        ...

    async def close(self) -> None:
        """Release files. Everything appended is already durable."""
        ...

    async def wait_lost(self) -> None:
        """Return when this process loses the right to write the notebook (another host took
        it over, or the shared store is gone); the room must then close. Single-host stores
        never return."""
        ...


class Storage(Protocol):
    """The data dir: which notebooks exist, their info, opening their stores."""

    async def create(self, info: NotebookInfo, notebook: Notebook) -> None:
        """Create a notebook at version 0 with `notebook` as content; `NotebookExists` if taken."""
        ...

    async def info(self, notebook_id: str) -> NotebookInfo:
        """`NotebookNotFound` if absent."""
        ...

    async def update_info(self, info: NotebookInfo) -> None:
        """Rewrite a notebook's info (name, updated, version) atomically."""
        ...

    async def list(self, after: str | None, limit: int) -> list[NotebookInfo]:
        """Notebooks with `id > after` in id order (bytewise), at most `limit`."""
        ...

    async def delete(self, notebook_id: str) -> None:
        """Remove a notebook and all its files; `NotebookNotFound` if absent."""
        ...

    async def open(self, notebook_id: str, window: int) -> tuple[NotebookStore, Recovered]:
        """Open for writing and recover head state; `NotebookNotFound` if absent; `not_owner`
        if another live host has it open (shared stores)."""
        ...

    async def owner_elsewhere(self, notebook_id: str) -> bool:
        """Whether another live host has the notebook open (always False for one host)."""
        ...

    # -- records: small values with an expiry (kick times, idempotent answers) ------------------
    #
    # A key-value table beside the notebooks, independent of them (deleting a notebook leaves
    # its records; they expire). Keys are strings of at most `MAX_RECORD_KEY` characters (any
    # Unicode; callers namespace them, e.g. `kick:<notebook>:<incarnation>:<user>`), values are
    # bytes of at most `MAX_RECORD_VALUE`. On SQL: one table (key TEXT PRIMARY KEY, value BYTEA,
    # expires BIGINT), an upsert and a point select; expired rows may be deleted at any time.

    async def put_record(self, key: str, value: bytes, expires: int) -> None:
        """Store `value` under `key` until `expires` (epoch milliseconds), replacing any earlier
        value. Durable when this returns (it survives a restart). `StorageError("invalid_record")`
        for an over-long key or value; `storage_failed` on a disk error."""
        ...

    async def get_record(self, key: str, now: int) -> bytes | None:
        """The value stored under `key` if its expiry is after `now` (epoch ms); else None."""
        ...


MAX_RECORD_KEY = 1024
MAX_RECORD_VALUE = 1 << 20


def check_record(key: str, value: bytes) -> None:
    """`StorageError("invalid_record")` unless `key` and `value` fit the record limits."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_RECORD_KEY:
        raise StorageError("invalid_record", f"a record key must have 1 to {MAX_RECORD_KEY} characters")
    if not isinstance(value, bytes) or len(value) > MAX_RECORD_VALUE:
        raise StorageError("invalid_record", f"a record value must be at most {MAX_RECORD_VALUE} bytes")
