"""`agora keys create --name NAME | list | revoke ID`: manage the data dir's API keys.

The lead's argparse wiring calls `run_keys_command`; this module only prints and returns the exit
status (0 success, 1 nothing to revoke, 2 bad usage or unreadable data dir).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

import psycopg

from engine.auth.keys import KeyStore
from engine.auth.pg_keys import PgKeyStore
from engine.storage.base import StorageError
from engine.storage.pg_schema import migrate


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def run_keys_command(
    data_dir: Path,
    action: Literal["create", "list", "revoke"],
    name: str | None = None,
    key: str | None = None,
    store_url: str | None = None,
) -> int:
    """Run one `agora keys` action against `data_dir` and print human-readable output.

    - create: needs `name`; prints the new key once (only its hash is stored).
    - list: prints id, name, created and revoked for every stored key (never a secret).
    - revoke: needs `key` (a key id or a name); running servers stop accepting it within a second.

    With `store_url` (`--store postgresql://…`) the keys live in that database (every host
    sharing it accepts them) instead of the data dir.
    """
    try:
        store: KeyStore | PgKeyStore = (
            open_pg_keys(store_url) if store_url else KeyStore(Path(data_dir), [])
        )
        if action == "create":
            if not name:
                print("agora keys create: --name is required", file=sys.stderr)
                return 2
            key_id, api_key = store.create(name)
            print(f"Created API key {key_id} ({name.strip()}).")
            print()
            print(f"    {api_key}")
            print()
            print("This is the only time the key is shown: store it in your platform's secrets now.")
            print("Use it as:  Authorization: Bearer <key>")
            return 0
        if action == "list":
            infos = store.list()
            if not infos:
                print("No API keys stored in this data dir (AGORA_API_KEYS keys are not listed).")
                return 0
            rows = [("ID", "NAME", "CREATED", "REVOKED")]
            rows += [(i.id, i.name, _when(i.created), _when(i.revoked)) for i in infos]
            widths = [max(len(r[c]) for r in rows) for c in range(4)]
            for row in rows:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            return 0
        if action == "revoke":
            if not key:
                print("agora keys revoke: give the key id (or name) to revoke", file=sys.stderr)
                return 2
            if store.revoke(key):
                print(f"Revoked {key}. Running servers refuse it within a second.")
                return 0
            print(f"No active key with id or name {key!r}.", file=sys.stderr)
            return 1
        print(f"agora keys: unknown action {action!r} (create, list, revoke)", file=sys.stderr)
        return 2
    except (OSError, ValueError, psycopg.Error, StorageError) as exc:
        print(f"agora keys {action}: {exc}", file=sys.stderr)
        return 2


def open_pg_keys(url: str) -> PgKeyStore:
    """A key store on the database at `url` (schema migrated first); one connection per call."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        migrate(conn)
    return PgKeyStore(lambda: psycopg.connect(url, autocommit=True, connect_timeout=10), [])
