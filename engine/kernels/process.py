"""A kernel process: launched, interrupted and shut down by jupyter_client's `AsyncKernelManager`.

Only those calls are used from jupyter_client, each run to completion by `asyncio.run` in a
worker thread (`trio.to_thread`): a fresh event loop that is closed again, so nothing of asyncio
outlives the call (jupyter_client's blocking `KernelManager` would leave one unclosed loop per
call in trio's worker threads). The messaging is ours (`engine.kernels.channels`).

The process runs in its own session (process group), in the notebook's working directory,
at nice +10 (below the server), with `RLIMIT_AS` set before exec when a memory cap is given,
with no `AGORA_*` variable in its environment, and stdout/stderr sent to /dev/null (its output
reaches the notebook over iopub). Death is seen at once through a pidfd.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

from engine.kernels.channels import Channel, Codec

DEFAULT_KERNEL = "python3"
KERNEL_NICE = 10  # kernels run at a lower CPU priority than the server
IOPUB_BACKLOG = 250_000  # iopub messages held in zmq's queue before the reader takes them


def resolve_kernel_name(wanted: object) -> str:
    """The kernelspec to start: `wanted` when it is installed, else python3 (blocking)."""
    if isinstance(wanted, str) and wanted:
        try:
            KernelSpecManager().get_kernel_spec(wanted)
            return wanted
        except (NoSuchKernel, OSError, ValueError):
            pass
    return DEFAULT_KERNEL


def _child_setup(limit: int | None) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        # Below the server's priority: a kernel that burns CPU must not starve the fan-out.
        os.nice(KERNEL_NICE)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _in_new_loop(awaitable: Awaitable[Any]) -> Any:
    """Run one jupyter_client coroutine to completion on a fresh asyncio loop (blocking)."""

    async def main() -> Any:
        return await awaitable

    return asyncio.run(main())


def _kernel_env() -> dict[str, str]:
    """The server's environment without Agora's secrets and settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}


class KernelProcess:
    """A started kernel with its four channels. Use `launch`; `close` after it ended."""

    def __init__(self, km: AsyncKernelManager, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.km = km
        info: dict[str, Any] = dict(km.get_connection_info())
        key = info["key"] if isinstance(info["key"], bytes) else str(info["key"]).encode()
        self.codec = Codec(key, str(info.get("signature_scheme", "hmac-sha256")))
        self.interrupt_mode: str = str(km.kernel_spec.interrupt_mode if km.kernel_spec else "signal")
        identity = self.codec.session.bsession

        def connect(kind: int, port: int, *, subscribe: bool = False) -> Channel:
            sock: zmq.Socket[bytes] = context.socket(kind)
            sock.linger = 0
            if subscribe:
                # Take iopub off the wire at once, whatever the trio loop does: past the high-water
                # mark a PUB socket drops messages (the per-cell caps bound what is kept).
                sock.setsockopt(zmq.RCVHWM, IOPUB_BACKLOG)
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                sock.setsockopt(zmq.IDENTITY, identity)
            sock.connect(f"tcp://{info['ip']}:{port}")
            return Channel(sock)

        self.shell = connect(zmq.DEALER, info["shell_port"])
        self.stdin = connect(zmq.DEALER, info["stdin_port"])
        self.control = connect(zmq.DEALER, info["control_port"])
        self.iopub = connect(zmq.SUB, info["iopub_port"], subscribe=True)
        process = getattr(km.provisioner, "process", None)
        self.pid: int = process.pid if process is not None else -1
        self.pidfd: int | None = os.pidfd_open(self.pid) if self.pid > 0 else None
        self.exit_code: int | None = None

    @classmethod
    async def launch(
        cls,
        name: str,
        cwd: Path,
        connection_dir: Path,
        memory: int | None,
        context: zmq.Context[zmq.Socket[bytes]],
    ) -> KernelProcess:
        """Start kernel `name` (a kernelspec) and connect to it. Raises OSError/RuntimeError."""

        def start() -> AsyncKernelManager:
            cwd.mkdir(parents=True, exist_ok=True)
            connection_dir.mkdir(parents=True, exist_ok=True)
            km = AsyncKernelManager(kernel_name=name)
            km.transport = "tcp"
            km.ip = "127.0.0.1"
            km.connection_file = str(connection_dir / f"kernel-{os.urandom(6).hex()}.json")
            _in_new_loop(
                km.start_kernel(
                    cwd=str(cwd),
                    env=_kernel_env(),
                    preexec_fn=_child_setup(memory),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                )
            )
            return km

        km = await trio.to_thread.run_sync(start)
        try:
            return cls(km, context)
        except BaseException:
            await trio.to_thread.run_sync(lambda: _in_new_loop(km.shutdown_kernel(now=True)))
            raise

    async def wait_exit(self) -> int | None:
        """Return once the process has exited (its exit code when known)."""
        if self.pidfd is None:
            await trio.sleep_forever()
        assert self.pidfd is not None
        await trio.lowlevel.wait_readable(self.pidfd)
        process = getattr(self.km.provisioner, "process", None)
        if process is not None:
            self.exit_code = await trio.to_thread.run_sync(process.wait)
        return self.exit_code

    async def interrupt(self) -> None:
        """Interrupt as the kernelspec says (SIGINT to the process group, or interrupt_request)."""
        if self.interrupt_mode == "message":
            _, frames = self.codec.request("interrupt_request", {})
            self.control.send(frames)
        else:
            await trio.to_thread.run_sync(lambda: _in_new_loop(self.km.interrupt_kernel()))

    def close_channels(self) -> None:
        """Close the sockets (their receiving tasks must have ended)."""
        for channel in (self.shell, self.stdin, self.control, self.iopub):
            channel.close()

    async def shutdown(self, *, now: bool) -> None:
        """Shut down (gracefully unless `now`; SIGKILL after the grace), reap, remove files."""
        self.close_channels()
        if self.pidfd is not None:
            trio.lowlevel.notify_closing(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        km = self.km
        km.shutdown_wait_time = 3.0

        process = getattr(km.provisioner, "process", None) if km.provisioner else None

        def stop() -> None:
            try:
                _in_new_loop(km.shutdown_kernel(now=now))
            except Exception:  # already gone: make sure it is reaped and its files removed
                _in_new_loop(km.cleanup_resources())
            if process is not None:
                process.kill()
                process.wait()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stop)
