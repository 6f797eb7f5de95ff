"""The process secret that signs user tokens (contract §1, §3).

`AGORA_SECRET` wins when set (several hosts behind one proxy must share it). Otherwise the secret
lives in `<data dir>/secret`: 32 random bytes, created once with mode 0600, atomically, so that
tokens stay valid across restarts of a single host.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SECRET_FILE = "secret"
SECRET_BYTES = 32


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_secret(data_dir: Path, env_value: str | None) -> bytes:
    """The signing secret: `env_value` (UTF-8 encoded) when non-empty, else the data dir's.

    The data-dir secret is written to a temp file (0600), fsync'd, then hard-linked into place, so
    two processes starting together agree on one secret and a crash never leaves a partial file.
    Raises `OSError` when the data dir cannot be read or written, `ValueError` when the stored
    secret is empty (a corrupt data dir: refuse rather than sign with nothing).
    """
    if env_value:
        return env_value.encode("utf-8")
    data_dir = Path(data_dir)
    path = data_dir / SECRET_FILE
    try:
        value = path.read_bytes()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process won the race: then use theirs
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(data_dir)
        value = path.read_bytes()
    if not value:
        raise ValueError(f"{path} is empty; delete it to generate a new secret")
    return value
