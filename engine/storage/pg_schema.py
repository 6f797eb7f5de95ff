"""The PostgreSQL schema of `--store`, created and migrated by the program.

`migrate(conn)` applies, in one transaction under a transaction-level advisory lock (so hosts
starting together do not race), every migration newer than the highest version recorded in
`agora_schema_migrations`. Migrations are append-only: never edit a released one, add the next.
A database migrated by a newer Agora (a version this build does not know) is refused.
"""

from __future__ import annotations

import psycopg

from engine.storage.base import StorageError

MIGRATION_LOCK = 0x41676F7261  # "Agora": the advisory lock key serialising migrations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE agora_notebooks (
            id          text PRIMARY KEY,
            name        text NOT NULL,
            created     bigint NOT NULL,
            updated     bigint NOT NULL,
            version     bigint NOT NULL DEFAULT 0,
            initial     bytea NOT NULL
        );
        -- The op log; the primary key is the last line of defence against two writers.
        -- (client, seq) of the retained tail is the dedupe table, rebuilt at open.
        CREATE TABLE agora_ops (
            notebook    text NOT NULL REFERENCES agora_notebooks (id) ON DELETE CASCADE,
            v           bigint NOT NULL,
            client      text NOT NULL,
            seq         bigint NOT NULL,
            "user"      text NOT NULL,
            time        bigint NOT NULL,
            op          bytea NOT NULL,
            PRIMARY KEY (notebook, v)
        );
        CREATE TABLE agora_snapshots (
            notebook    text NOT NULL REFERENCES agora_notebooks (id) ON DELETE CASCADE,
            v           bigint NOT NULL,
            state       bytea NOT NULL,
            PRIMARY KEY (notebook, v)
        );
        CREATE TABLE agora_api_keys (
            id          text PRIMARY KEY,
            name        text NOT NULL,
            hash        bytea NOT NULL,
            created     bigint NOT NULL,
            revoked     bigint
        );
        CREATE UNIQUE INDEX agora_api_keys_active_name ON agora_api_keys (name) WHERE revoked IS NULL;
        -- Live hosts: the backend (pid, start) of the connection each host keeps, and a heartbeat.
        CREATE TABLE agora_hosts (
            id            text PRIMARY KEY,
            pid           integer NOT NULL,
            backend_start timestamptz NOT NULL,
            heartbeat     timestamptz NOT NULL
        );
        -- One lease per open notebook; epoch grows on every take-over (the fencing token).
        CREATE TABLE agora_leases (
            notebook    text PRIMARY KEY,
            host        text NOT NULL,
            epoch       bigint NOT NULL
        );
        """,
    ),
    (
        2,
        """
        -- This life of a notebook id (tokens are bound to it); NULL: derived from created.
        ALTER TABLE agora_notebooks ADD COLUMN incarnation text;
        -- Small values with an expiry: kick times, idempotent answers.
        CREATE TABLE agora_records (
            key         text PRIMARY KEY,
            value       bytea NOT NULL,
            expires     bigint NOT NULL
        );
        CREATE INDEX agora_records_expires ON agora_records (expires);
        """,
    ),
]

LATEST = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection[object]) -> int:
    """Bring the schema to `LATEST` (idempotent); returns the version found before migrating.

    `StorageError("schema_too_new")` if the database was migrated by a newer Agora.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS agora_schema_migrations"
            " (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM agora_schema_migrations").fetchone()
        found = int(row[0]) if row is not None else 0  # type: ignore[index]
        if found > LATEST:
            raise StorageError(
                "schema_too_new", f"the database schema is at version {found}; this Agora knows {LATEST}"
            )
        for version, sql in MIGRATIONS:
            if version > found:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO agora_schema_migrations (version) VALUES (%s)", (version,))
    return found
