"""The append-only op log of one notebook: segmented files of checksummed records.

Record layout (little-endian), one per committed op, back to back in a segment file::

    offset  size  field
    0       4     magic  b"AGop"
    4       4     payload length in bytes (u32)
    8       8     version v (u64)
    16      4     crc32 (zlib) of bytes 4..16 (length + version) followed by the payload
    20      n     payload: orjson of `CommittedOp.history_item()` ({"v","client","seq","user","time","op"})

Segments live in `log/` and are named by the version of their first record, zero-padded to 20
digits (`00000000000000001001.log`), so the segment holding version v is found by a bisect over
the names. A new segment is started once the active one holds `segment_ops` records or
`segment_bytes` bytes (checked before a batch; a batch never spans two segments).

Promises:
- `append(batch)` writes the whole batch with one `pwrite` and makes it durable with ONE fsync
  (group commit). When it returns, every record of the batch survives `kill -9` and power loss.
- Recovery reads forward and checks magic, length, crc and that versions follow each other
  without a gap, also across segment names. A bad record at the end of the newest segment with
  no valid record after it is a torn (never acknowledged) write: it is cut off (truncate +
  fsync) and never replayed. A bad record anywhere else (followed by a valid record, or inside
  an older, sealed segment), a version gap, or a segment name that does not follow the previous
  segment raises `StorageError("log_corrupt")` naming the file and the byte offset: the notebook
  is then refused rather than served wrong.
  A valid record cannot hide inside a payload: every header holds a 0x00 byte (the version's
  high bytes) and orjson never emits a raw control byte, so the forward scan has no false hits.
- Any `OSError` while appending raises `StorageError("storage_failed")` and poisons the log:
  every later append raises too. The partial write is truncated back to the last good offset
  when the disk allows; otherwise recovery's torn-tail cut removes it.

This module is blocking I/O: the store calls it through `trio.to_thread.run_sync`. One writer
(append, trim) at a time; reads may run concurrently with a write (they stop at the durable head
they were given and use their own file handles).
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from engine.records import CommittedOp
from engine.storage.base import StorageError
from engine.storage.disk import Disk

log = logging.getLogger(__name__)

MAGIC = b"AGop"
HEADER = struct.Struct("<4sIQI")  # magic, payload length, version, crc32
_CRC_FIELDS = struct.Struct("<IQ")  # the (length, version) prefix the crc covers
MAX_RECORD = 1 << 30  # a payload larger than this is treated as a corrupt length field
INDEX_EVERY = 64  # sparse in-memory index: offset of every 64th record of a segment
SEGMENT_RE = re.compile(r"^(\d{20})\.log$")


def segment_name(first: int) -> str:
    return f"{first:020d}.log"


def encode_record(op: CommittedOp) -> bytes:
    """One record: header + orjson payload."""
    payload = orjson.dumps(op.history_item())
    crc = zlib.crc32(payload, zlib.crc32(_CRC_FIELDS.pack(len(payload), op.v)))
    return HEADER.pack(MAGIC, len(payload), op.v, crc) + payload


def decode_payload(payload: bytes | memoryview, version: int) -> CommittedOp:
    """The `CommittedOp` of a checksum-verified payload; `ValueError` when it does not fit."""
    d: Any = orjson.loads(payload)
    if not isinstance(d, dict) or d.get("v") != version or not isinstance(d.get("op"), list):
        raise ValueError("payload does not match its header")
    return CommittedOp(
        v=version,
        client=str(d["client"]),
        seq=int(d["seq"]),
        user=str(d["user"]),
        time=int(d["time"]),
        op=d["op"],
    )


def parse_at(data: bytes, pos: int) -> tuple[int, int] | str:
    """`(version, payload_length)` of the well-formed record at `pos`, else why it is not one."""
    end = len(data)
    if end - pos < HEADER.size:
        return "incomplete header"
    magic, length, version, crc = HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        return "bad magic"
    if length > MAX_RECORD:
        return f"implausible length {length}"
    start = pos + HEADER.size
    if start + length > end:
        return "incomplete payload"
    got = zlib.crc32(memoryview(data)[start : start + length], zlib.crc32(data[pos + 4 : pos + 16]))
    if got != crc:
        return "checksum mismatch"
    return version, length


def find_valid_after(data: bytes, pos: int) -> int | None:
    """Offset of the first well-formed record starting at or after `pos`, if any."""
    while True:
        pos = data.find(MAGIC, pos)
        if pos < 0:
            return None
        if not isinstance(parse_at(data, pos), str):
            return pos
        pos += 1


def corrupt(path: Path, offset: int, why: str) -> StorageError:
    return StorageError("log_corrupt", f"op log {path} is corrupt at byte offset {offset}: {why}")


class OpLog:
    """The segmented log of one notebook (blocking; see the module docstring for promises)."""

    def __init__(
        self, directory: Path, disk: Disk, *, segment_ops: int = 10_000, segment_bytes: int = 16 << 20
    ) -> None:
        self.dir = directory
        self.disk = disk
        self.segment_ops = segment_ops
        self.segment_bytes = segment_bytes
        self.head = 0  # last durable version
        self.poisoned: str | None = None  # why appends are refused, once a write failed
        self.cut: tuple[Path, int, int] | None = None  # (file, offset, bytes) of a torn tail cut
        self._lock = threading.Lock()  # guards `_segments` and `_index` between threads
        self._segments: list[int] = []
        self._index: dict[int, dict[int, int]] = {}  # segment first -> {version: offset}
        self._fd: int | None = None  # active (last) segment, opened for writing
        self._end = 0  # end of the last good record in the active segment
        self._count = 0  # records in the active segment

    # -- listing -------------------------------------------------------------------------------

    def _path(self, first: int) -> Path:
        return self.dir / segment_name(first)

    def segments(self) -> list[int]:
        """First versions of the segments, ascending (a copy)."""
        with self._lock:
            return list(self._segments)

    def first_version(self) -> int:
        """The oldest version still in the log (1 unless trimmed; head + 1 when empty)."""
        with self._lock:
            return self._segments[0] if self._segments else self.head + 1

    # -- recovery ------------------------------------------------------------------------------

    def recover(self, read_from: int) -> list[CommittedOp]:
        """Validate the log from the segment holding `read_from` to its end; return records `v >= read_from`.

        Sets `head`, cuts a torn tail, opens the newest segment for appending. Segments entirely
        before `read_from` are not read (they are checked when history reaches them).
        """
        names = sorted(int(m.group(1)) for n in os.listdir(self.dir) if (m := SEGMENT_RE.match(n)))
        with self._lock:
            self._segments = names
        out: list[CommittedOp] = []
        if not names:
            self.head = 0
            return out
        i = max(0, bisect.bisect_right(names, read_from) - 1)
        expected, end = names[i], 0
        for j in range(i, len(names)):
            first = names[j]
            path = self._path(first)
            if first != expected:
                raise corrupt(path, 0, f"segment starts at version {first} but version {expected} comes next")
            with open(path, "rb") as f:
                data = f.read()
            expected, end = self._scan(path, first, data, read_from, out, last=j == len(names) - 1)
        self.head = expected - 1
        last = names[-1]
        self._fd = self.disk.open_write(self._path(last))
        self._end = end
        self._count = self.head - last + 1
        return out

    def _scan(
        self, path: Path, first: int, data: bytes, keep_from: int, out: list[CommittedOp], *, last: bool
    ) -> tuple[int, int]:
        """Check one segment; append its records `>= keep_from` to `out`. Returns (next version, end)."""
        pos, expected, n = 0, first, len(data)
        index: dict[int, int] = {}
        while pos < n:
            parsed = parse_at(data, pos)
            if isinstance(parsed, str):
                later = find_valid_after(data, pos + 1)
                if later is not None:
                    raise corrupt(path, pos, f"{parsed}, but a valid record follows at offset {later}")
                if not last:
                    raise corrupt(path, pos, f"{parsed} in a sealed (non-final) segment")
                self._cut_tail(path, pos, n - pos, parsed)
                break
            version, length = parsed
            if version != expected:
                raise corrupt(path, pos, f"record has version {version} where {expected} was expected")
            start = pos + HEADER.size
            if version >= keep_from:
                try:
                    out.append(decode_payload(memoryview(data)[start : start + length], version))
                except (ValueError, KeyError, TypeError) as e:
                    raise corrupt(path, pos, f"undecodable payload ({e})") from None
            if (version - first) % INDEX_EVERY == 0:
                index[version] = pos
            pos = start + length
            expected += 1
        with self._lock:
            self._index[first] = index
        return expected, pos

    def _cut_tail(self, path: Path, offset: int, size: int, why: str) -> None:
        log.warning("op log %s: cutting torn tail at offset %d (%d bytes, %s)", path, offset, size, why)
        try:
            fd = self.disk.open_write(path)
            try:
                self.disk.truncate(fd, offset)
                self.disk.fsync(fd)
            finally:
                self.disk.close(fd)
        except OSError as e:
            raise StorageError("storage_failed", f"cannot cut the torn tail of {path}: {e}") from e
        self.cut = (path, offset, size)

    # -- appending -----------------------------------------------------------------------------

    def append(self, records: Sequence[CommittedOp]) -> float:
        """Write `records` (versions head+1, head+2, …) with one write and one fsync.

        Returns the seconds spent in write + fsync. Raises `StorageError` `storage_failed`
        (and poisons the log) on any `OSError`; `bad_append` if versions do not follow `head`.
        """
        if self.poisoned is not None:
            raise StorageError(
                "storage_failed", f"op log refuses writes after an earlier failure: {self.poisoned}"
            )
        if not records:
            return 0.0
        for k, r in enumerate(records):
            if r.v != self.head + 1 + k:
                raise StorageError(
                    "bad_append", f"append of version {r.v} where {self.head + 1 + k} comes next"
                )
        chunks = [encode_record(r) for r in records]
        data = b"".join(chunks)
        try:
            if self._fd is None or (
                self._count > 0 and (self._count >= self.segment_ops or self._end >= self.segment_bytes)
            ):
                self._roll(self.head + 1)
            fd = self._fd
            assert fd is not None
            t0 = time.perf_counter()
            try:
                self.disk.write(fd, data, self._end)
                self.disk.fsync(fd)
            except OSError:
                self._truncate_back(fd)
                raise
            elapsed = time.perf_counter() - t0
        except OSError as e:
            self.poisoned = f"{type(e).__name__}: {e}"
            raise StorageError("storage_failed", f"writing the op log failed: {e}") from e
        first = self._segment_of_active()
        pos = self._end
        with self._lock:
            index = self._index.setdefault(first, {})
            for r, chunk in zip(records, chunks, strict=True):
                if (r.v - first) % INDEX_EVERY == 0:
                    index[r.v] = pos
                pos += len(chunk)
        self._end = pos
        self._count += len(records)
        self.head = records[-1].v
        return elapsed

    def _segment_of_active(self) -> int:
        with self._lock:
            return self._segments[-1]

    def _truncate_back(self, fd: int) -> None:
        """Best effort: cut a partial write back to the last good offset."""
        try:
            self.disk.truncate(fd, self._end)
            self.disk.fsync(fd)
        except OSError as e:
            log.error(
                "op log %s: cannot truncate after a failed write (%s); recovery will cut it", self.dir, e
            )

    def _roll(self, first: int) -> None:
        """Seal the active segment and start a new one named `first` (durably created)."""
        fd = self.disk.open_write(self._path(first))
        try:
            self.disk.fsync_dir(self.dir)
        except OSError:
            self.disk.close(fd)
            raise
        old, self._fd = self._fd, fd
        if old is not None:
            self.disk.close(old)
        with self._lock:
            if not self._segments or self._segments[-1] != first:
                self._segments.append(first)
        self._end = 0
        self._count = 0

    # -- reading -------------------------------------------------------------------------------

    def read(self, lo: int, hi: int, limit: int | None = None) -> list[CommittedOp]:
        """Records with `lo <= v <= hi` (hi <= a durable head), oldest first, at most `limit`.

        Seeks to `lo` via the segment names and the sparse index; skipped records are stepped
        over by their header. `version_not_found` if `lo` was trimmed away; `log_corrupt` if a
        record in the range is damaged.
        """
        out: list[CommittedOp] = []
        lo = max(lo, 1)
        if hi < lo or (limit is not None and limit <= 0):
            return out
        segs = self.segments()
        if not segs or lo < segs[0]:
            first = segs[0] if segs else self.head + 1
            raise StorageError("version_not_found", f"ops before version {first} are no longer kept")
        i = bisect.bisect_right(segs, lo) - 1
        v, started = lo, False
        while i < len(segs) and v <= hi and (limit is None or len(out) < limit):
            first = segs[i]
            if started and first != v:
                raise corrupt(self._path(first), 0, f"segment starts at version {first}, expected {v}")
            v = self._read_segment(first, lo, hi, limit, out)
            started = True
            i += 1
        if v <= hi and (limit is None or len(out) < limit):
            raise corrupt(self._path(segs[-1]), 0, f"log ends before version {v} (head {hi})")
        return out

    def _read_segment(self, first: int, lo: int, hi: int, limit: int | None, out: list[CommittedOp]) -> int:
        path = self._path(first)
        sample = first + (max(lo, first) - first) // INDEX_EVERY * INDEX_EVERY
        with self._lock:
            index = self._index.setdefault(first, {})
            start = index.get(sample)
        v, pos = (sample, start) if start is not None else (first, 0)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise StorageError("version_not_found", f"ops from version {lo} are no longer kept") from None
        with f:
            f.seek(pos)
            while v <= hi and (limit is None or len(out) < limit):
                header = f.read(HEADER.size)
                if not header:
                    return v  # end of segment: the next one continues at v
                if len(header) < HEADER.size:
                    raise corrupt(path, pos, "incomplete header inside the durable range")
                magic, length, version, crc = HEADER.unpack(header)
                if magic != MAGIC or version != v or length > MAX_RECORD:
                    raise corrupt(path, pos, f"bad header (magic {magic!r}, version {version}, expected {v})")
                if (v - first) % INDEX_EVERY == 0:
                    index[v] = pos
                if v < lo:
                    f.seek(length, os.SEEK_CUR)
                else:
                    payload = f.read(length)
                    if len(payload) != length or zlib.crc32(payload, zlib.crc32(header[4:16])) != crc:
                        raise corrupt(path, pos, "checksum mismatch")
                    try:
                        out.append(decode_payload(payload, v))
                    except (ValueError, KeyError, TypeError) as e:
                        raise corrupt(path, pos, f"undecodable payload ({e})") from None
                pos += HEADER.size + length
                v += 1
        return v

    # -- retention -----------------------------------------------------------------------------

    def trim_through(self, version: int) -> int:
        """Delete sealed segments whose every record is `<= version`; returns how many."""
        removed = 0
        while True:
            with self._lock:
                if len(self._segments) < 2 or self._segments[1] - 1 > version:
                    break
                first = self._segments.pop(0)
                self._index.pop(first, None)
            self._path(first).unlink(missing_ok=True)
            removed += 1
        if removed:
            self.disk.fsync_dir(self.dir)
        return removed

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self.disk.close(fd)
