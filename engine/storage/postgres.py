"""`Storage` in PostgreSQL (`--store postgresql://…`): several hosts share one database.

Tables (engine.storage.pg_schema): `agora_notebooks` (registry, info and version-0 content),
`agora_ops` (the op log, primary key `(notebook, v)`), `agora_snapshots` (milestones),
`agora_api_keys`, `agora_hosts` and `agora_leases` (ownership, engine.storage.pg_leases).

Promises (the same as `FileStorage` where they overlap):
- `open` takes the notebook's lease first: `StorageError("not_owner")` if another live host has
  it open. The store's `wait_lost()` returns when the lease is lost (the room must then close).
- `append` is ONE autocommit statement per batch (group commit): it checks the lease's fencing
  epoch with `FOR SHARE`, inserts every record and moves the notebook's version, and returns
  only after COMMIT. A lost lease or an already committed version (another writer) is
  `not_owner`; a lost connection is `store_unavailable`; both poison the store.
- `load_version` any past version (newest snapshot at or below it + replay); history pages by
  the primary key; the `(client, seq) -> v` dedupe is rebuilt from the tail `open` returns.
- Every database call is a blocking psycopg call in a worker thread (`trio.to_thread`), on a
  connection from a psycopg_pool pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
import psycopg
import trio
from psycopg_pool import ConnectionPool, PoolTimeout

from engine.metrics import FSYNC_SECONDS
from engine.ot.model import Notebook, notebook_from_state, notebook_to_state
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
from engine.storage.pg_leases import CONNECT_OPTIONS, HostLeases, Lease
from engine.storage.pg_schema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")
RECORD_SWEEP_EVERY = 1024  # puts between two deletions of expired records

APPEND = """
WITH lease AS (
    SELECT 1 FROM agora_leases
    WHERE notebook = %(nb)s AND host = %(host)s AND epoch = %(epoch)s FOR SHARE
), ins AS (
    INSERT INTO agora_ops (notebook, v, client, seq, "user", time, op)
    SELECT %(nb)s, u.v, u.client, u.seq, u.usr, u.time, u.op
    FROM unnest(%(v)s::bigint[], %(client)s::text[], %(seq)s::bigint[], %(usr)s::text[],
                %(time)s::bigint[], %(op)s::bytea[]) AS u(v, client, seq, usr, time, op)
    WHERE EXISTS (SELECT 1 FROM lease)
    RETURNING 1
), upd AS (
    UPDATE agora_notebooks SET version = %(head)s, updated = %(updated)s
    WHERE id = %(nb)s AND EXISTS (SELECT 1 FROM lease)
)
SELECT count(*) FROM ins
"""

OP_COLUMNS = 'v, client, seq, "user", time, op'


def _op_from(row: tuple[Any, ...]) -> CommittedOp:
    v, client, seq, user, t, op = row
    return CommittedOp(v=int(v), client=client, seq=int(seq), user=user, time=int(t), op=orjson.loads(op))


def _state_bytes(notebook: Notebook) -> bytes:
    return orjson.dumps(notebook_to_state(notebook))


def _notebook_from(data: bytes, what: str) -> Notebook:
    try:
        return notebook_from_state(orjson.loads(data))
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError("snapshot_corrupt", f"{what} is unusable: {e}") from e


INFO_COLUMNS = "id, name, created, updated, version, incarnation"


def _info_from(row: tuple[Any, ...]) -> NotebookInfo:
    nid, name, created, updated, version, incarnation = row
    return NotebookInfo(
        id=nid,
        name=name,
        created=int(created),
        updated=int(updated),
        version=int(version),
        incarnation=incarnation or "",  # NULL (older rows): derived from created
    )


class PostgresStorage:
    """`Storage` over one PostgreSQL database; this process is one host. Call `close()` at the end.

    The constructor blocks (connects, migrates the schema, registers the host): build it in a
    thread from async code. Run `run()` in a nursery to keep the host's heartbeat (without it
    other hosts judge this one dead after `lease_ttl` seconds and may take its notebooks).
    """

    def __init__(
        self,
        url: str,
        *,
        snapshot_every: int = 1000,
        snapshot_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        lease_ttl: float = 5.0,
        pool_size: int = 10,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        self.url = url
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.clock = clock
        self._open: set[str] = set()
        self._puts = 0
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                migrate(conn)
            self.pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True, **CONNECT_OPTIONS},
                timeout=10.0,
                open=True,
                name="agora",
            )
            self.leases = HostLeases(url, self.pool.connection, ttl=lease_ttl)
        except psycopg.Error as e:
            raise StorageError("store_unavailable", f"cannot use the database: {e}") from e

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; database trouble becomes `StorageError("store_unavailable")`."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as e:
            raise StorageError("store_unavailable", f"no database connection: {e}") from e
        except psycopg.OperationalError as e:
            raise StorageError("store_unavailable", f"database connection failed: {e}") from e

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep this host's heartbeat until cancelled (see `engine.storage.pg_leases`)."""
        await self.leases.run(task_status=task_status)

    async def close(self) -> None:
        """Unregister the host (its leases go) and close every connection."""
        await self._run(self.leases.close_sync)
        await self._run(self.pool.close)

    # -- Storage -------------------------------------------------------------------------------

    async def create(self, info: NotebookInfo, notebook: Notebook) -> None:
        """Create at version 0 (one INSERT); `NotebookExists` if the id is taken."""
        check_id(info.id)

        def work() -> None:
            initial = _state_bytes(notebook)
            with self._conn() as conn:
                try:
                    conn.execute(
                        "INSERT INTO agora_notebooks"
                        " (id, name, created, updated, version, initial, incarnation)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (
                            info.id,
                            info.name,
                            info.created,
                            info.updated,
                            info.version,
                            initial,
                            info.incarnation,
                        ),
                    )
                except psycopg.errors.UniqueViolation:
                    raise NotebookExists(info.id) from None

        await self._run(work)

    async def info(self, notebook_id: str) -> NotebookInfo:
        check_id(notebook_id)

        def work() -> NotebookInfo:
            with self._conn() as conn:
                row = conn.execute(
                    f"SELECT {INFO_COLUMNS} FROM agora_notebooks WHERE id = %s", (notebook_id,)
                ).fetchone()
            if row is None:
                raise NotebookNotFound(notebook_id)
            return _info_from(row)

        return await self._run(work)

    async def update_info(self, info: NotebookInfo) -> None:
        """Rename and move `updated`/`version` forward (never back: a stale host cannot rewind)."""
        check_id(info.id)

        def work() -> None:
            with self._conn() as conn:
                cur = conn.execute(
                    "UPDATE agora_notebooks SET name = %s, updated = greatest(updated, %s),"
                    " version = greatest(version, %s) WHERE id = %s",
                    (info.name, info.updated, info.version, info.id),
                )
                if cur.rowcount == 0:
                    raise NotebookNotFound(info.id)

        await self._run(work)

    async def list(self, after: str | None, limit: int) -> list[NotebookInfo]:
        """Notebooks with `id > after` in bytewise id order (`COLLATE "C"`), at most `limit`."""

        def work() -> list[NotebookInfo]:
            with self._conn() as conn:
                rows = conn.execute(
                    f"SELECT {INFO_COLUMNS} FROM agora_notebooks"
                    ' WHERE %s::text IS NULL OR id COLLATE "C" > %s::text'
                    ' ORDER BY id COLLATE "C" LIMIT %s',
                    (after, after, max(limit, 0)),
                ).fetchall()
            return [_info_from(r) for r in rows]

        return await self._run(work)

    async def delete(self, notebook_id: str) -> None:
        """Delete the notebook, its log and snapshots (one transaction) and its lease."""
        check_id(notebook_id)

        def work() -> None:
            with self._conn() as conn, conn.transaction():
                cur = conn.execute("DELETE FROM agora_notebooks WHERE id = %s", (notebook_id,))
                if cur.rowcount == 0:
                    raise NotebookNotFound(notebook_id)
                conn.execute("DELETE FROM agora_leases WHERE notebook = %s", (notebook_id,))

        await self._run(work)

    async def owner_elsewhere(self, notebook_id: str) -> bool:
        """Whether another live host has `notebook_id` open (so this host must not serve it)."""

        def work() -> bool:
            with self._conn() as conn:
                return self.leases.owner_elsewhere_sync(conn, notebook_id)

        return await self._run(work)

    async def open(self, notebook_id: str, window: int) -> tuple[PostgresNotebookStore, Recovered]:
        """Take the lease, then recover head state. `NotebookNotFound`, `not_owner`, `already_open`."""
        check_id(notebook_id)
        if notebook_id in self._open:
            raise StorageError("already_open", f"notebook {notebook_id!r} is already open")
        self._open.add(notebook_id)
        try:
            return await self._run(lambda: self._open_sync(notebook_id, max(window, 0)))
        except BaseException:
            self._open.discard(notebook_id)
            raise

    def _open_sync(self, notebook_id: str, window: int) -> tuple[PostgresNotebookStore, Recovered]:
        with self._conn() as conn:
            row = conn.execute("SELECT initial FROM agora_notebooks WHERE id = %s", (notebook_id,)).fetchone()
            if row is None:
                raise NotebookNotFound(notebook_id)
            lease = self.leases.acquire_sync(conn, notebook_id)
            try:
                store = PostgresNotebookStore(self, notebook_id, lease)
                recovered = store.recover_sync(conn, bytes(row[0]), window)
            except BaseException:
                self.leases.release_sync(conn, lease)
                raise
        return store, recovered

    def _closed(self, notebook_id: str) -> None:
        self._open.discard(notebook_id)

    # -- records (kick times, idempotent answers) ------------------------------------------------

    async def put_record(self, key: str, value: bytes, expires: int) -> None:
        """Upsert `key` (committed when this returns); expired rows are swept now and then."""
        check_record(key, value)
        self._puts += 1
        sweep = self._puts % RECORD_SWEEP_EVERY == 0

        def work() -> None:
            with self._conn() as conn:
                conn.execute(
                    "INSERT INTO agora_records (key, value, expires) VALUES (%s, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires",
                    (key, value, expires),
                )
                if sweep:
                    conn.execute("DELETE FROM agora_records WHERE expires <= %s", (int(time.time() * 1000),))

        await self._run(work)

    async def get_record(self, key: str, now: int) -> bytes | None:
        """The value under `key` if it expires after `now` (epoch ms); else None."""

        def work() -> bytes | None:
            with self._conn() as conn:
                row = conn.execute(
                    "SELECT value FROM agora_records WHERE key = %s AND expires > %s", (key, now)
                ).fetchone()
            return bytes(row[0]) if row is not None else None

        return await self._run(work)


class PostgresNotebookStore:
    """`NotebookStore` of one open notebook on this host, fenced by its lease."""

    def __init__(self, storage: PostgresStorage, notebook_id: str, lease: Lease) -> None:
        self.storage = storage
        self.notebook_id = notebook_id
        self.lease = lease
        self.head = 0
        self.last_snapshot = 0
        self._last_snapshot_time = storage.clock()
        self._snapshotting = False
        self._poisoned: StorageError | None = None
        self._closed = False
        self._lock = trio.Lock()  # one append (or close) at a time

    @property
    def poisoned(self) -> bool:
        """True once an append failed: every later append raises."""
        return self._poisoned is not None

    def _base_sync(self, conn: psycopg.Connection[Any], version: int) -> tuple[int, Notebook]:
        """Newest readable snapshot at or below `version`, else the version-0 content."""
        rows = conn.execute(
            "SELECT v, state FROM agora_snapshots WHERE notebook = %s AND v <= %s ORDER BY v DESC LIMIT 3",
            (self.notebook_id, version),
        ).fetchall()
        for v, state in rows:
            try:
                return int(v), _notebook_from(bytes(state), f"snapshot {v} of {self.notebook_id!r}")
            except StorageError as e:
                log.warning("%s; trying an older one", e.message)
        row = conn.execute(
            "SELECT initial FROM agora_notebooks WHERE id = %s", (self.notebook_id,)
        ).fetchone()
        if row is None:
            raise NotebookNotFound(self.notebook_id)
        return 0, _notebook_from(bytes(row[0]), f"initial content of {self.notebook_id!r}")

    def _ops_sync(
        self, conn: psycopg.Connection[Any], after: int, upto: int, limit: int | None = None
    ) -> list[CommittedOp]:
        rows = conn.execute(
            f"SELECT {OP_COLUMNS} FROM agora_ops WHERE notebook = %s AND v > %s AND v <= %s"
            " ORDER BY v LIMIT %s",
            (self.notebook_id, after, upto, limit),
        ).fetchall()
        ops = [_op_from(r) for r in rows]
        if limit is None and len(ops) != upto - after:
            raise StorageError("log_corrupt", f"ops {after + 1}..{upto} of {self.notebook_id!r} have gaps")
        return ops

    def recover_sync(self, conn: psycopg.Connection[Any], initial: bytes, window: int) -> Recovered:
        """(Blocking) head version, head document and the last `window` ops."""
        row = conn.execute(
            "SELECT coalesce(max(v), 0) FROM agora_ops WHERE notebook = %s", (self.notebook_id,)
        ).fetchone()
        head = int(row[0]) if row is not None else 0
        base_v, notebook = self._base_sync(conn, head)
        start = min(base_v, max(head - window, 0))
        ops = self._ops_sync(conn, start, head)
        notebook = replay(notebook, ops, base_v)
        self.head = head
        self.last_snapshot = base_v
        tail = ops[len(ops) - window :] if window else []
        return Recovered(notebook=notebook, version=head, tail=tail)

    async def append(self, records: Sequence[CommittedOp]) -> None:
        """Committed (one statement, fenced by the lease epoch) when this returns."""
        batch = list(records)
        async with self._lock:
            if self._closed:
                raise StorageError("closed", f"store of {self.notebook_id!r} is closed")
            if self._poisoned is not None:
                raise StorageError(self._poisoned.code, "store refuses writes after an earlier failure")
            for k, r in enumerate(batch):
                if r.v != self.head + 1 + k:
                    raise StorageError(
                        "bad_append", f"append of version {r.v} where {self.head + 1 + k} comes next"
                    )
            if not batch:
                return
            started = time.perf_counter()
            try:
                await trio.to_thread.run_sync(self._append_sync, batch)
            except StorageError as e:
                self._poisoned = e
                raise
            self.head = batch[-1].v
        FSYNC_SECONDS.observe(time.perf_counter() - started)  # with --store: the commit's latency

    def _append_sync(self, batch: list[CommittedOp]) -> None:
        params = {
            "nb": self.notebook_id,
            "host": self.lease.host,
            "epoch": self.lease.epoch,
            "v": [r.v for r in batch],
            "client": [r.client for r in batch],
            "seq": [r.seq for r in batch],
            "usr": [r.user for r in batch],
            "time": [r.time for r in batch],
            "op": [orjson.dumps(r.op) for r in batch],
            "head": batch[-1].v,
            "updated": batch[-1].time,
        }
        with self.storage._conn() as conn:
            try:
                row = conn.execute(APPEND, params).fetchone()
            except (psycopg.errors.UniqueViolation, psycopg.errors.ForeignKeyViolation) as e:
                raise StorageError(
                    "not_owner", f"another host committed to {self.notebook_id!r} ({e.diag.message_primary})"
                ) from e
            except psycopg.OperationalError:
                raise  # store_unavailable, from _conn
            except psycopg.Error as e:
                raise StorageError("storage_failed", f"append failed: {e}") from e
        if row is None or int(row[0]) != len(batch):
            raise StorageError("not_owner", f"this host no longer holds the lease of {self.notebook_id!r}")

    def snapshot_due(self, version: int) -> bool:
        """As `FileNotebookStore.snapshot_due`."""
        if self._snapshotting or version <= self.last_snapshot or version > self.head:
            return False
        if version - self.last_snapshot >= self.storage.snapshot_every:
            return True
        return self.storage.clock() - self._last_snapshot_time >= self.storage.snapshot_seconds

    async def write_snapshot(self, notebook: Notebook, version: int) -> None:
        """Insert the milestone at `version` (<= head); a snapshot is a pure function of the log,
        so it needs no fencing. A database error is `store_unavailable`/`storage_failed`."""
        if version > self.head:
            raise StorageError("bad_snapshot", f"snapshot at {version} is past the durable head {self.head}")
        if version <= self.last_snapshot or self._snapshotting:
            return
        self._snapshotting = True

        def work() -> None:
            state = _state_bytes(notebook)
            with self.storage._conn() as conn:
                try:
                    conn.execute(
                        "INSERT INTO agora_snapshots (notebook, v, state) VALUES (%s, %s, %s)"
                        " ON CONFLICT DO NOTHING",
                        (self.notebook_id, version, state),
                    )
                except psycopg.errors.ForeignKeyViolation:
                    raise NotebookNotFound(self.notebook_id) from None
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as e:
                    raise StorageError("storage_failed", f"snapshot failed: {e}") from e

        try:
            await trio.to_thread.run_sync(work)
            self.last_snapshot = version
        finally:
            self._snapshotting = False
            self._last_snapshot_time = self.storage.clock()

    async def load_version(self, version: int) -> Notebook:
        """Document at `version` (0..head); `version_not_found` outside."""
        head = self.head
        if not 0 <= version <= head:
            raise StorageError("version_not_found", f"version {version} does not exist (head is {head})")

        def work() -> Notebook:
            with self.storage._conn() as conn:
                base_v, notebook = self._base_sync(conn, version)
                ops = self._ops_sync(conn, base_v, version)
            return replay(notebook, ops, base_v)

        return await trio.to_thread.run_sync(work)

    async def history(self, since: int, limit: int) -> list[CommittedOp]:
        """Committed ops with `since < v <= head`, oldest first, at most `limit`."""
        head = self.head
        since = max(since, 0)
        if since >= head or limit <= 0:
            return []

        def work() -> list[CommittedOp]:
            with self.storage._conn() as conn:
                return self._ops_sync(conn, since, head, limit)

        return await trio.to_thread.run_sync(work)

    async def wait_lost(self) -> None:
        """Return once this host has lost the notebook's lease (another host may own it now)."""
        await self.lease.lost.wait()

    async def close(self) -> None:
        """Give the lease back; later appends raise `closed`. Idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True

            def work() -> None:
                with self.storage._conn() as conn:
                    self.storage.leases.release_sync(conn, self.lease)

            try:
                await trio.to_thread.run_sync(work)
            except StorageError as e:
                log.warning("releasing the lease of %s: %s", self.notebook_id, e.message)
            finally:
                self.storage._closed(self.notebook_id)
