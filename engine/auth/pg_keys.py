"""API keys in PostgreSQL (`--store`): what `agora keys --store …` writes and every host accepts.

Same interface and promises as `engine.auth.keys.KeyStore` (create / list / revoke / verify):
only SHA-256 hashes are stored (table `agora_api_keys`); a partial unique index keeps active
names unambiguous. `verify` is called on every request and must not block, so it compares
against an in-memory copy of the active hashes that `run()` refreshes every `RELOAD_INTERVAL`
seconds in a worker thread: a key created or revoked on any host takes effect on every host
within about a second. The CLI's create/list/revoke are blocking calls.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import trio

from engine.auth.keys import KEY_PREFIX, MAX_NAME, KeyInfo, _hash

log = logging.getLogger("agora.keys")

RELOAD_INTERVAL = 0.5  # seconds between refreshes of the active hashes

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


class PgKeyStore:
    """Accepted API keys: the environment's plus the database's non-revoked ones."""

    def __init__(self, connect: Connect, env_keys: list[str]) -> None:
        self._connect = connect
        self._env_hashes = [_hash(k) for k in (k.strip() for k in env_keys) if k]
        self._active_hashes: list[bytes] = []
        self.reload()

    def reload(self) -> None:
        """(Blocking) re-read the active hashes."""
        with self._connect() as conn:
            rows = conn.execute("SELECT hash FROM agora_api_keys WHERE revoked IS NULL").fetchall()
        self._active_hashes = [bytes(r[0]) for r in rows]

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh the active hashes until cancelled (a failed refresh keeps the last good set)."""
        task_status.started()
        while True:
            await trio.sleep(RELOAD_INTERVAL)
            try:
                await trio.to_thread.run_sync(self.reload)
            except psycopg.Error as exc:
                log.warning("API keys not refreshed: %s", exc)

    def create(self, name: str) -> tuple[str, str]:
        """Mint a key named `name`; returns `(key_id, api_key)`. `ValueError` for a bad or taken name."""
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise ValueError(f"a key name must have 1 to {MAX_NAME} characters")
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = secrets.token_hex(6)
        with self._connect() as conn:
            try:
                conn.execute(
                    "INSERT INTO agora_api_keys (id, name, hash, created) VALUES (%s, %s, %s, %s)",
                    (key_id, name, _hash(api_key), int(time.time())),
                )
            except psycopg.errors.UniqueViolation:
                raise ValueError(f"an active key named {name!r} already exists") from None
        self.reload()
        return key_id, api_key

    def list(self) -> list[KeyInfo]:
        """Every stored key, active and revoked, oldest first (never a secret)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, name, created, revoked FROM agora_api_keys ORDER BY created, id"
            ).fetchall()
        return [KeyInfo(id=r[0], name=r[1], created=int(r[2]), revoked=r[3]) for r in rows]

    def revoke(self, key_id_or_name: str) -> bool:
        """Revoke the active key with that id (or, failing that, that name). False if none."""
        now = int(time.time())
        with self._connect() as conn:
            for column in ("id", "name"):
                cur = conn.execute(
                    f"UPDATE agora_api_keys SET revoked = %s WHERE {column} = %s AND revoked IS NULL",
                    (now, key_id_or_name),
                )
                if cur.rowcount:
                    break
            else:
                return False
        self.reload()
        return True

    def verify(self, api_key: str) -> bool:
        """Whether `api_key` is an environment key or an active stored key (constant time per key)."""
        if not api_key:
            return False
        presented = _hash(api_key)
        ok = False
        for known in (*self._env_hashes, *self._active_hashes):
            ok |= hmac.compare_digest(presented, known)
        return ok
