"""The one door through which the file storage touches the disk.

Every write, fsync, truncate, rename and directory sync of `engine.storage` goes through a
`Disk`. Production uses `Disk()` (thin wrappers over `os`); tests pass a subclass that raises
`OSError(ENOSPC)` on the Nth write or fsync, so failure handling is exercised on real files
without mocking the operating system.

All methods are blocking: callers run them in `trio.to_thread.run_sync`, never on the event loop.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class Disk:
    """Blocking file primitives. Each method either completes or raises `OSError`."""

    def open_write(self, path: Path, *, exclusive: bool = False) -> int:
        """Open (creating if needed) `path` for positional writes; returns a file descriptor.

        Never `O_APPEND`: writes carry an explicit offset (`pwrite`), so a failed write can be
        cut back to the last good offset and the next one lands exactly there.
        """
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if exclusive:
            flags |= os.O_EXCL
        return os.open(path, flags, 0o644)

    def write(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of `data` at `offset` (loops over short writes)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:  # pragma: no cover - pwrite raises instead on Linux
                raise OSError("short write")
            view = view[n:]
            offset += n

    def fsync(self, fd: int) -> None:
        """Make the file's data (and its size) durable: `fdatasync` where available."""
        if hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:  # pragma: no cover - macOS/Windows
            os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        """Make the directory entries of `path` (creations, renames, removals) durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        """Atomically rename `src` over `dst` (same directory)."""
        os.replace(src, dst)

    def write_file_atomic(self, path: Path, data: bytes) -> None:
        """Replace `path` with `data` atomically and durably.

        Temp file in the same directory, write, fsync, rename over `path`, fsync the directory:
        after a crash at any point `path` holds either its old or its new content, never a mix.
        A leftover `.tmp-*` file is harmless; `cleanup_temp` removes it.
        """
        tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(4)}")
        fd = self.open_write(tmp, exclusive=True)
        try:
            try:
                self.write(fd, data, 0)
                self.fsync(fd)
            finally:
                self.close(fd)
            self.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.fsync_dir(path.parent)


def cleanup_temp(directory: Path) -> None:
    """Remove `.tmp-*` leftovers of interrupted atomic writes in `directory` (best effort)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(".tmp-"):
            try:
                (directory / name).unlink()
            except OSError:
                pass


class UnsafeNoSyncDisk(Disk):
    """A disk whose fsyncs do nothing: for measuring what durability costs, never for data.

    With it an acknowledged op survives a process crash (the kernel has it) but not a power
    loss. `agora serve --unsafe-no-fsync` selects it; the benchmark compares both.
    """

    def fsync(self, fd: int) -> None:
        return None

    def fsync_dir(self, path: Path) -> None:
        return None
