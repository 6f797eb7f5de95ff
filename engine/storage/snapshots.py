"""Snapshots of one notebook: the full document at a version, written atomically.

File `snapshots/<version, 20 digits>.snap`, little-endian::

    offset  size  field
    0       4     magic b"AGsn"
    4       4     crc32 (zlib) of the payload
    8       8     payload length (u64)
    16      n     payload: orjson of {"version": v, "state": notebook_to_state(nb)}

Writing: temp file in `snapshots/`, write, fsync, rename to the final name, fsync the directory
(`Disk.write_file_atomic`). Encoding runs in a worker thread; the `Notebook` handed in is an
immutable value, so the room keeps committing meanwhile.

Every snapshot is a milestone: the content at any version V is the newest snapshot at or before V
plus a replay of the op log from there to V (or `initial.json` + the log from version 1 when no
snapshot is that old).

Retention policy:
- Default (`keep_snapshots=None`): the whole op log and every milestone snapshot are kept
  forever, so history and `content?version=V` answer for every version since creation.
  History is a product feature; disk is cheap next to lost work.
- `keep_snapshots=K`: after each snapshot only the newest K milestones are kept, and the log
  segments wholly at or before the oldest kept milestone are deleted, except that the last
  `window` ops before the head always stay (resume and the `(client, seq)` dedupe table survive
  restarts). Versions before the oldest kept milestone then answer `version_not_found`
  (history before the log start too). `initial.json` is always kept (it is small), so version
  0 stays reachable.

Recovery uses the newest snapshot that passes its checks (magic, length, crc, version); a corrupt
one is logged and skipped, falling back to an older one or to `initial.json` + the full log.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson

from engine.ot.model import Notebook, notebook_from_state, notebook_to_state
from engine.storage.base import StorageError
from engine.storage.disk import Disk, cleanup_temp

log = logging.getLogger(__name__)

SNAP_MAGIC = b"AGsn"
SNAP_HEADER = struct.Struct("<4sIQ")  # magic, crc32 of payload, payload length
SNAPSHOT_RE = re.compile(r"^(\d{20})\.snap$")


def snapshot_name(version: int) -> str:
    return f"{version:020d}.snap"


def encode_snapshot(notebook: Notebook, version: int) -> bytes:
    """The bytes of a snapshot file (header + payload). CPU-bound: call it in a thread."""
    payload = orjson.dumps({"version": version, "state": notebook_to_state(notebook)})
    return SNAP_HEADER.pack(SNAP_MAGIC, zlib.crc32(payload), len(payload)) + payload


def decode_snapshot(data: bytes, version: int) -> Notebook:
    """The notebook of a snapshot file's bytes; `ValueError` if anything does not check out."""
    if len(data) < SNAP_HEADER.size:
        raise ValueError("file shorter than its header")
    magic, crc, length = SNAP_HEADER.unpack_from(data)
    if magic != SNAP_MAGIC:
        raise ValueError("bad magic")
    payload = memoryview(data)[SNAP_HEADER.size :]
    if len(payload) != length:
        raise ValueError(f"payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != crc:
        raise ValueError("checksum mismatch")
    d: Any = orjson.loads(payload)
    if not isinstance(d, dict) or d.get("version") != version or not isinstance(d.get("state"), dict):
        raise ValueError("payload does not match the file name")
    return notebook_from_state(d["state"])


class SnapshotDir:
    """The `snapshots/` directory of one notebook (blocking; call from a worker thread)."""

    def __init__(self, directory: Path, disk: Disk) -> None:
        self.dir = directory
        self.disk = disk

    def versions(self) -> list[int]:
        """Versions that have a snapshot file, ascending (not yet verified)."""
        return sorted(int(m.group(1)) for n in os.listdir(self.dir) if (m := SNAPSHOT_RE.match(n)))

    def clean(self) -> None:
        """Remove leftovers of interrupted writes."""
        cleanup_temp(self.dir)

    def write(self, notebook: Notebook, version: int) -> None:
        """Encode and write atomically; `OSError` on a disk failure (the old files are intact)."""
        self.disk.write_file_atomic(self.dir / snapshot_name(version), encode_snapshot(notebook, version))

    def load(self, version: int) -> Notebook:
        """The snapshot at `version`; `StorageError("snapshot_corrupt")` when it fails its checks."""
        path = self.dir / snapshot_name(version)
        try:
            data = path.read_bytes()
            return decode_snapshot(data, version)
        except FileNotFoundError:
            raise StorageError("snapshot_missing", f"snapshot {path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StorageError("snapshot_corrupt", f"snapshot {path} is unusable: {e}") from e

    def newest_good(self, at_most: int, candidates: list[int] | None = None) -> tuple[int, Notebook] | None:
        """The newest snapshot with version `<= at_most` that loads; corrupt ones are skipped."""
        for v in reversed(candidates if candidates is not None else self.versions()):
            if v > at_most:
                continue
            try:
                return v, self.load(v)
            except StorageError as e:
                log.warning("%s; falling back to an older snapshot", e.message)
        return None

    def prune(self, keep: int) -> int | None:
        """Delete all but the newest `keep` snapshots; returns the oldest kept version."""
        versions = self.versions()
        if not versions:
            return None
        doomed, kept = versions[:-keep], versions[-keep:]
        for v in doomed:
            (self.dir / snapshot_name(v)).unlink(missing_ok=True)
        if doomed:
            self.disk.fsync_dir(self.dir)
        return kept[0]
