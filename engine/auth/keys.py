"""API keys: what a platform's servers present as `Authorization: Bearer <key>` (contract §1, §2).

Two sources, both checked on every request:

- `AGORA_API_KEYS` (comma-separated, given to the constructor as `env_keys`): for tests and
  simple deployments.
- `<data dir>/keys.json`, managed by `agora keys create|list|revoke`. Only a SHA-256 hash of each
  key is stored, with its id, name, creation time and revocation time. The file is rewritten
  atomically (temp file, fsync, rename, fsync of the directory) under an advisory lock, so
  concurrent CLI calls do not lose each other's changes.

A running server notices a change made by another process (a revocation by the CLI) because
`verify` re-stats keys.json at most every `RELOAD_INTERVAL` seconds and re-reads it when its
inode, size or mtime changed. Hashes are compared with `hmac.compare_digest`, and every known hash
is compared, so the time taken does not reveal which key matched or how much of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS_FILE = "keys.json"
LOCK_FILE = ".keys.lock"
KEY_PREFIX = "agora_"
RELOAD_INTERVAL = 0.25  # seconds between stats of keys.json in `verify`
MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One stored key, without its secret."""

    id: str
    name: str
    created: int  # epoch seconds
    revoked: int | None = None  # epoch seconds, or None while active


def _hash(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()


class KeyStore:
    """Accepted API keys: the environment's plus the data dir's non-revoked ones."""

    def __init__(self, data_dir: Path, env_keys: list[str]) -> None:
        self._dir = Path(data_dir)
        self._path = self._dir / KEYS_FILE
        self._env_hashes = [_hash(k) for k in (k.strip() for k in env_keys) if k]
        self._records: list[dict[str, Any]] = []
        self._active_hashes: list[bytes] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -float("inf")
        self._reload()

    # -- reading ----------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self._path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise ValueError(f"{self._path} is not a keys file")
        return [k for k in keys if isinstance(k, dict)]

    def _reload(self) -> None:
        stamp = self._stat()
        records = self._read() if stamp is not None else []
        self._records = records
        self._active_hashes = []
        for rec in records:
            if rec.get("revoked") is None and isinstance(rec.get("hash"), str):
                with contextlib.suppress(ValueError):
                    self._active_hashes.append(bytes.fromhex(rec["hash"]))
        self._stamp = stamp

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL:
            return
        self._checked = now
        if self._stat() != self._stamp:
            try:
                self._reload()
            except (ValueError, OSError):
                # A half-edited or unreadable file: keep the last good set rather than lock
                # everybody out; the next change of the file triggers another attempt.
                pass

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._reload()
            yield
        finally:
            os.close(fd)

    def _write(self, records: list[dict[str, Any]]) -> None:
        tmp = self._dir / f".{KEYS_FILE}.{os.getpid()}.tmp"
        body = json.dumps({"version": 1, "keys": records}, indent=2).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        dfd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._reload()

    # -- public -----------------------------------------------------------------------------

    def create(self, name: str) -> tuple[str, str]:
        """Mint a key named `name`; returns `(key_id, api_key)`. The key is not kept: show it once.

        Raises `ValueError` for an empty or over-long name, or one already used by an active key
        (names identify keys in `revoke`, so they must be unambiguous).
        """
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME:
            raise ValueError(f"a key name must have 1 to {MAX_NAME} characters")
        with self._locked():
            if any(r.get("name") == name and r.get("revoked") is None for r in self._records):
                raise ValueError(f"an active key named {name!r} already exists")
            ids = {r.get("id") for r in self._records}
            key_id = secrets.token_hex(6)
            while key_id in ids:
                key_id = secrets.token_hex(6)
            api_key = KEY_PREFIX + secrets.token_urlsafe(32)
            record = {
                "id": key_id,
                "name": name,
                "hash": _hash(api_key).hex(),
                "created": int(time.time()),
                "revoked": None,
            }
            self._write([*self._records, record])
        return key_id, api_key

    def list(self) -> list[KeyInfo]:
        """Every stored key, active and revoked, oldest first. Environment keys are not listed."""
        self._reload()
        return [
            KeyInfo(
                id=str(r.get("id")),
                name=str(r.get("name")),
                created=int(r.get("created") or 0),
                revoked=r.get("revoked"),
            )
            for r in self._records
        ]

    def revoke(self, key_id_or_name: str) -> bool:
        """Revoke the active key with that id (or, failing that, that name). False if none."""
        with self._locked():
            target = next(
                (r for r in self._records if r.get("id") == key_id_or_name and r.get("revoked") is None),
                None,
            ) or next(
                (r for r in self._records if r.get("name") == key_id_or_name and r.get("revoked") is None),
                None,
            )
            if target is None:
                return False
            records = [dict(r) for r in self._records]
            for r in records:
                if r.get("id") == target.get("id"):
                    r["revoked"] = int(time.time())
            self._write(records)
        return True

    def verify(self, api_key: str) -> bool:
        """Whether `api_key` is an environment key or an active stored key (constant time per
        known key; stored keys revoked by another process stop working within a second)."""
        if not api_key:
            return False
        self._maybe_reload()
        presented = _hash(api_key)
        ok = False
        for known in (*self._env_hashes, *self._active_hashes):
            ok |= hmac.compare_digest(presented, known)
        return ok
