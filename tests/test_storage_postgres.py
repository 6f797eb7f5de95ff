"""The PostgreSQL store beyond the shared contract suite: recovery, schema migrations, ownership
(leases, fencing epochs, the (notebook, v) key as last line of defence), lease loss, API keys.

Two `PostgresStorage` objects on one database are two hosts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import trio

from engine.auth.pg_keys import PgKeyStore
from engine.ot.components import apply_op
from engine.ot.model import Notebook
from engine.storage.base import NotebookInfo, StorageError
from engine.storage.pg_schema import LATEST, migrate
from engine.storage.postgres import PostgresStorage
from tests.pg_cluster import PgCluster
from tests.test_storage import gen_ops, replay_to

INFO = NotebookInfo(id="nb", name="n", created=0, updated=0)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.database()


@pytest.fixture
def hosts(pg_url: str) -> Iterator[Any]:
    """`hosts(**kw)` builds another host on the test's database; all are closed afterwards."""
    made: list[PostgresStorage] = []

    def make(**kw: Any) -> PostgresStorage:
        made.append(PostgresStorage(pg_url, **kw))
        return made[-1]

    yield make
    for host in made:
        host.leases.close_sync()
        host.pool.close()


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


@pytest.mark.parametrize("snapshot_every", [1, 7, 1000])
async def test_recovery_equals_replay_of_all_ops(hosts: Any, snapshot_every: int) -> None:
    storage = hosts(snapshot_every=snapshot_every)
    await storage.create(INFO, Notebook())
    store, _ = await storage.open("nb", 10)
    ops = gen_ops(150)
    nb = Notebook()
    for i in range(0, 150, 4):
        chunk = ops[i : i + 4]
        await store.append(chunk)
        for op in chunk:
            nb = apply_op(nb, op.op, op.v)
        if store.snapshot_due(chunk[-1].v):
            await store.write_snapshot(nb, chunk[-1].v)
    await store.close()
    store, rec = await hosts().open("nb", 25)
    assert rec.version == 150 and rec.notebook == replay_to(ops, 150) and rec.tail == ops[-25:]
    await store.close()


async def test_corrupt_newest_snapshot_falls_back(hosts: Any, pg_url: str) -> None:
    storage = hosts(snapshot_every=5)
    await storage.create(INFO, Notebook())
    store, _ = await storage.open("nb", 10)
    ops = gen_ops(12)
    await store.append(ops[:5])
    await store.write_snapshot(replay_to(ops, 5), 5)
    await store.append(ops[5:10])
    await store.write_snapshot(replay_to(ops, 10), 10)
    await store.append(ops[10:])
    await store.close()
    sql(pg_url, "UPDATE agora_snapshots SET state = 'garbage' WHERE v = 10")
    store, rec = await hosts().open("nb", 10)
    assert rec.version == 12 and rec.notebook == replay_to(ops, 12)
    assert await store.load_version(11) == replay_to(ops, 11)
    await store.close()


async def test_schema_is_versioned_and_migrations_are_idempotent(hosts: Any, pg_url: str) -> None:
    hosts()
    hosts()  # a second host on a migrated database changes nothing
    assert sql(pg_url, "SELECT version FROM agora_schema_migrations ORDER BY version") == [
        (v,) for v in range(1, LATEST + 1)
    ]
    with psycopg.connect(pg_url) as conn:
        assert migrate(conn) == LATEST
    sql(pg_url, "INSERT INTO agora_schema_migrations (version) VALUES (%s)", LATEST + 1)
    with pytest.raises(StorageError) as e:
        hosts()
    assert e.value.code == "store_unavailable" or e.value.code == "schema_too_new"


async def test_second_host_gets_not_owner_then_takes_over_a_dead_one(hosts: Any, pg_url: str) -> None:
    a, b = hosts(), hosts()
    await a.create(INFO, Notebook())
    ops = gen_ops(6)
    store_a, _ = await a.open("nb", 10)
    await store_a.append(ops[:2])
    with pytest.raises(StorageError) as e:
        await b.open("nb", 10)
    assert e.value.code == "not_owner"
    assert await b.owner_elsewhere("nb") and not await a.owner_elsewhere("nb")
    # Host a hangs: its heartbeat goes stale, so b may take the notebook (the epoch moves on).
    stale = "UPDATE agora_hosts SET heartbeat = now() - interval '1 hour' WHERE id = %s"
    sql(pg_url, stale, a.leases.host_id)
    assert not await b.owner_elsewhere("nb")
    store_b, rec = await b.open("nb", 10)
    assert rec.version == 2 and store_b.lease.epoch == store_a.lease.epoch + 1
    # The stale owner's commit is refused (fencing epoch); the store stays refused.
    with pytest.raises(StorageError) as e:
        await store_a.append(ops[2:4])
    assert e.value.code == "not_owner" and store_a.poisoned
    await store_b.append(ops[2:6])
    assert [r[0] for r in sql(pg_url, "SELECT v FROM agora_ops ORDER BY v")] == [1, 2, 3, 4, 5, 6]
    await store_a.close()  # releasing a lease taken over is a no-op
    assert await a.owner_elsewhere("nb")
    await store_b.close()


async def test_primary_key_is_the_last_line_of_defence(hosts: Any, pg_url: str) -> None:
    storage = hosts()
    await storage.create(INFO, Notebook())
    store, _ = await storage.open("nb", 10)
    ops = gen_ops(3)
    await store.append(ops[:1])
    # A writer that bypassed the leases committed version 2 already.
    sql(
        pg_url,
        "INSERT INTO agora_ops (notebook, v, client, seq, \"user\", time, op)"
        " VALUES ('nb', 2, 'x', 1, 'u', 0, '[]')",
    )
    with pytest.raises(StorageError) as e:
        await store.append(ops[1:3])
    assert e.value.code == "not_owner" and store.poisoned
    assert sql(pg_url, "SELECT v, client FROM agora_ops ORDER BY v") == [(1, ops[0].client), (2, "x")]
    await store.close()


async def test_losing_the_database_connection_loses_the_lease(hosts: Any, pg_url: str) -> None:
    a, b = hosts(lease_ttl=1.0), hosts(lease_ttl=1.0)
    await a.create(INFO, Notebook())
    store_a, _ = await a.open("nb", 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        keeper_pid = sql(pg_url, "SELECT pid FROM agora_hosts WHERE id = %s", a.leases.host_id)[0][0]
        old_host = a.leases.host_id
        # The keeper's backend dies: at once every other host sees a dead host.
        sql(pg_url, "SELECT pg_terminate_backend(%s)", keeper_pid)
        store_b, _ = await b.open("nb", 10)
        with trio.fail_after(10):
            await store_a.wait_lost()  # a notices and gives the notebook up
        with pytest.raises(StorageError) as e:
            await store_a.append(gen_ops(1))
        assert e.value.code == "not_owner"
        with trio.fail_after(10):
            while a.leases.host_id == old_host:  # a registers again, as a new host
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    await store_b.close()
    await store_a.close()


async def test_a_renewing_host_keeps_its_lease(hosts: Any) -> None:
    a, b = hosts(lease_ttl=0.5), hosts(lease_ttl=0.5)
    await a.create(INFO, Notebook())
    store_a, _ = await a.open("nb", 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await trio.sleep(2.0)  # four times the ttl
        assert not store_a.lease.lost.is_set()
        with pytest.raises(StorageError) as e:
            await b.open("nb", 10)
        assert e.value.code == "not_owner"
        nursery.cancel_scope.cancel()
    await store_a.close()


async def test_api_keys_in_the_database(pg_url: str, hosts: Any) -> None:
    storage = hosts()
    one = PgKeyStore(storage.pool.connection, ["env-key"])
    other = PgKeyStore(lambda: psycopg.connect(pg_url, autocommit=True), [])
    key_id, key = one.create("platform")
    with pytest.raises(ValueError):
        one.create("platform")
    assert one.verify(key) and one.verify("env-key") and not one.verify("nope") and not one.verify("")
    assert not other.verify(key)  # not refreshed yet
    other.reload()
    assert other.verify(key) and not other.verify("env-key")
    assert [(k.id, k.name, k.revoked) for k in other.list()] == [(key_id, "platform", None)]
    assert sql(pg_url, "SELECT count(*) FROM agora_api_keys WHERE hash::text LIKE %s", f"%{key}%") == [(0,)]
    assert other.revoke("platform") and not other.revoke("platform")
    one.reload()
    assert not one.verify(key)
    one.create("platform")  # the name is free again once revoked
