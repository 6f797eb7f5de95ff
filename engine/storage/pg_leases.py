"""Notebook ownership for several hosts on one PostgreSQL database: lease rows with fencing epochs.

A host registers itself in `agora_hosts` with the backend pid and start time of a connection it
keeps open (the keeper) and a heartbeat it renews every `ttl / 5` seconds. A host is *live* while
its heartbeat is younger than `ttl` AND its keeper backend still exists in `pg_stat_activity`.
So a host killed with `kill -9` is dead at once (PostgreSQL ends the backend when the socket
closes), and a hung or partitioned one after `ttl`.

A lease is a row `(notebook, host, epoch)`. `acquire` takes it when it is free, already ours, or
held by a host that is not live, and bumps `epoch` on every take-over: the epoch is the fencing
token every append checks in its own statement (`FOR SHARE` on the lease row), so a stale owner
can never commit after a take-over; the op log's primary key `(notebook, v)` is the second wall.

The host gives up every lease (their `lost` events fire) when it cannot renew its heartbeat for
`0.6 * ttl` (measured from the send of the last good renewal, so always before anyone else can
judge it dead), and any single lease whose row no longer names it. After losing the keeper it
registers again under a fresh host id, so its old rows count as a dead host's and free.
All database calls are blocking psycopg calls run in worker threads.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import trio

from engine.storage.base import StorageError

log = logging.getLogger("agora.leases")

# A dead peer (network partition, vanished database host) is noticed in ~20 s by TCP
# keepalives instead of hanging a connection for the kernel's default two hours.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]

ALIVE = (
    "(h.heartbeat > now() - make_interval(secs => %(ttl)s)"
    " AND EXISTS (SELECT 1 FROM pg_stat_activity a"
    " WHERE a.pid = h.pid AND a.backend_start = h.backend_start))"
)

ACQUIRE = f"""
INSERT INTO agora_leases AS l (notebook, host, epoch) VALUES (%(nb)s, %(me)s, 1)
ON CONFLICT (notebook) DO UPDATE SET host = EXCLUDED.host, epoch = l.epoch + 1
WHERE l.host = EXCLUDED.host
   OR NOT EXISTS (SELECT 1 FROM agora_hosts h WHERE h.id = l.host AND {ALIVE})
RETURNING epoch
"""

OWNER_ELSEWHERE = f"""
SELECT 1 FROM agora_leases l JOIN agora_hosts h ON h.id = l.host
WHERE l.notebook = %(nb)s AND l.host <> %(me)s AND {ALIVE}
"""


@dataclass(slots=True)
class Lease:
    """This host's right to write one notebook, until `lost` is set."""

    notebook: str
    host: str
    epoch: int
    acquired: float = 0.0  # monotonic time the lease row was committed
    lost: trio.Event = field(default_factory=trio.Event)


class HostLeases:
    """This process as a host: its registration, heartbeat and the leases it holds."""

    def __init__(self, url: str, connect: Connect, *, ttl: float = 5.0) -> None:
        self.url = url
        self.connect = connect
        self.ttl = ttl
        self.host_id = ""
        self._keeper: psycopg.Connection[Any] | None = None
        self._held: dict[str, Lease] = {}
        self._register()

    # -- registration ------------------------------------------------------------------------

    def _register(self) -> None:
        """(Blocking) open a keeper connection and insert this host under a fresh id."""
        keeper = psycopg.connect(self.url, autocommit=True, **CONNECT_OPTIONS)
        host_id = secrets.token_hex(8)
        keeper.execute(
            "INSERT INTO agora_hosts (id, pid, backend_start, heartbeat)"
            " SELECT %s, pid, backend_start, now() FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            (host_id,),
        )
        self._keeper, self.host_id = keeper, host_id

    def _renew(self) -> set[tuple[str, int]]:
        """(Blocking) renew the heartbeat; the leases the database says this host holds."""
        keeper = self._keeper
        if keeper is None or keeper.closed:
            raise psycopg.OperationalError("no keeper connection")
        row = keeper.execute(
            "UPDATE agora_hosts SET heartbeat = now() WHERE id = %s RETURNING 1", (self.host_id,)
        ).fetchone()
        if row is None:
            raise psycopg.OperationalError("this host's registration row is gone")
        rows = keeper.execute(
            "SELECT notebook, epoch FROM agora_leases WHERE host = %s", (self.host_id,)
        ).fetchall()
        return {(str(nb), int(epoch)) for nb, epoch in rows}

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew the heartbeat until cancelled; drop leases the database no longer grants."""
        task_status.started()
        last_sent = time.monotonic()
        while True:
            await trio.sleep(self.ttl / 5)
            sent = time.monotonic()
            try:
                with trio.fail_after(self.ttl * 0.5):
                    granted = await trio.to_thread.run_sync(self._renew, abandon_on_cancel=True)
            except (psycopg.Error, trio.TooSlowError) as exc:
                if time.monotonic() - last_sent >= self.ttl * 0.6 or self._keeper_broken():
                    log.error("host %s lost the database (%s): giving up every notebook", self.host_id, exc)
                    self._lose_all()
                    await self._reregister()
                    last_sent = time.monotonic()
                continue
            last_sent = sent
            for lease in list(self._held.values()):
                # A lease taken while the renewal ran may be missing from its answer: skip it.
                if lease.acquired < sent and (lease.notebook, lease.epoch) not in granted:
                    log.warning("host %s lost the lease of %s", self.host_id, lease.notebook)
                    self._lose(lease)

    def _keeper_broken(self) -> bool:
        return self._keeper is None or self._keeper.closed or self._keeper.broken

    def _lose(self, lease: Lease) -> None:
        if self._held.get(lease.notebook) is lease:
            del self._held[lease.notebook]
        lease.lost.set()

    def _lose_all(self) -> None:
        for lease in list(self._held.values()):
            self._lose(lease)

    async def _reregister(self) -> None:
        old = self._keeper
        self._keeper = None
        if old is not None:
            await trio.to_thread.run_sync(old.close)
        try:
            await trio.to_thread.run_sync(self._register)
            log.info("host registered again as %s", self.host_id)
        except psycopg.Error as exc:
            log.error("cannot register with the database yet: %s", exc)

    # -- leases ------------------------------------------------------------------------------

    def acquire_sync(self, conn: psycopg.Connection[Any], notebook: str) -> Lease:
        """(Blocking) take the lease of `notebook`; `StorageError("not_owner")` if a live host has it."""
        if self._keeper is None:
            raise StorageError("store_unavailable", "this host is not registered with the database")
        row = conn.execute(ACQUIRE, {"nb": notebook, "me": self.host_id, "ttl": self.ttl}).fetchone()
        if row is None:
            raise StorageError("not_owner", f"notebook {notebook!r} is open on another host")
        lease = Lease(notebook=notebook, host=self.host_id, epoch=int(row[0]), acquired=time.monotonic())
        self._held[notebook] = lease
        return lease

    def release_sync(self, conn: psycopg.Connection[Any], lease: Lease) -> None:
        """(Blocking) give the lease back (a no-op if it was taken over meanwhile)."""
        if self._held.get(lease.notebook) is lease:
            del self._held[lease.notebook]
        conn.execute(
            "DELETE FROM agora_leases WHERE notebook = %s AND host = %s AND epoch = %s",
            (lease.notebook, lease.host, lease.epoch),
        )

    def owner_elsewhere_sync(self, conn: psycopg.Connection[Any], notebook: str) -> bool:
        """(Blocking) whether another live host holds the lease of `notebook`."""
        row = conn.execute(OWNER_ELSEWHERE, {"nb": notebook, "me": self.host_id, "ttl": self.ttl}).fetchone()
        return row is not None

    def close_sync(self) -> None:
        """(Blocking) forget this host: its leases and registration go; its keeper closes."""
        keeper, self._keeper = self._keeper, None
        self._held.clear()
        if keeper is None:
            return
        try:
            keeper.execute("DELETE FROM agora_leases WHERE host = %s", (self.host_id,))
            keeper.execute("DELETE FROM agora_hosts WHERE id = %s", (self.host_id,))
        except psycopg.Error as exc:
            log.warning("unregistering host %s: %s", self.host_id, exc)
        finally:
            keeper.close()
