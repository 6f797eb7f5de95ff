"""All kernels of this process: one `KernelSession` per notebook, the kernel limit, shutdown.

`KernelService.run` holds the nursery the sessions live in and a loop-lag probe; cancelling it
shuts every kernel down (graceful, then SIGKILL; each process reaped). Everything else is a
thin lookup: the engine's HTTP and WebSocket edges call `execute`, `interrupt`, `answer_input`
and `control` with a notebook id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import zmq

from engine import metrics
from engine.errors import Unavailable
from engine.kernels.queue import Requester, Run
from engine.kernels.session import KernelSession, KernelSettings
from engine.kernels.sink import NotebookSink

log = logging.getLogger("agora.kernels")


@dataclass(frozen=True, slots=True)
class KernelStatus:
    """What `GET …/kernel` and the summary report."""

    state: str
    name: str | None
    queue: list[str]
    running: str | None


class KernelService:
    """The process's kernels. Run `run` in a nursery before use."""

    def __init__(
        self, settings: KernelSettings, sink_for: Callable[[str], NotebookSink], max_kernels: int = 32
    ) -> None:
        self.settings = settings
        self.sink_for = sink_for
        self.max_kernels = max_kernels
        self.sessions: dict[str, KernelSession] = {}
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._nursery: trio.Nursery | None = None
        self._accepting = True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; then shut every kernel down."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(_probe_loop_lag)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._accepting = False
            self.context.destroy(linger=0)  # closes any socket left, never blocks

    def running(self) -> int:
        """Kernels up now (starting, idle or busy)."""
        return sum(1 for s in self.sessions.values() if s.live)

    def _may_start(self) -> bool:
        return self._accepting and self.running() < self.max_kernels

    async def session(self, notebook_id: str) -> KernelSession:
        """The notebook's kernel session, created (without a kernel) if needed."""
        session = self.sessions.get(notebook_id)
        if session is not None:
            return session
        if not self._accepting or self._nursery is None:
            raise Unavailable("the server is shutting down", code="shutting_down")
        session = KernelSession(
            notebook_id, self.sink_for(notebook_id), self.settings, self.context, self._may_start
        )
        self.sessions[notebook_id] = session
        await self._nursery.start(self._serve, session)
        return session

    async def _serve(self, session: KernelSession, task_status: trio.TaskStatus[None]) -> None:
        try:
            await session.serve(task_status=task_status)
        except Exception:  # one notebook's kernel must never take the server down
            log.exception("notebook %s: kernel session failed", session.notebook_id)
        finally:
            if self.sessions.get(session.notebook_id) is session:
                del self.sessions[session.notebook_id]

    def status(self, notebook_id: str) -> KernelStatus:
        """The notebook's kernel state (`none` when it has never had one here)."""
        session = self.sessions.get(notebook_id)
        if session is None:
            return KernelStatus("none", None, [], None)
        running = session.current.cell if session.current is not None else None
        return KernelStatus(session.state, session.name, session.queue.cells(), running)

    def frame(self, notebook_id: str) -> bytes | None:
        """The current `kernel` frame of a notebook that has had a kernel here (else None)."""
        session = self.sessions.get(notebook_id)
        return session.frame() if session is not None and session.name is not None else None

    async def execute(self, notebook_id: str, cells: list[str] | None, requester: Requester | None) -> Run:
        """Queue cells (all code cells when None); see `KernelSession.execute`."""
        return await (await self.session(notebook_id)).execute(cells, requester)

    async def interrupt(self, notebook_id: str) -> None:
        """Interrupt the running cell, if any."""
        session = self.sessions.get(notebook_id)
        if session is not None:
            await session.interrupt()

    def answer_input(self, notebook_id: str, requester: Requester, value: str) -> bool:
        """Pass an `input_reply` on; False when nothing of this requester was waiting."""
        session = self.sessions.get(notebook_id)
        return session is not None and session.answer_input(requester, value)

    async def control(self, notebook_id: str, action: str) -> KernelStatus:
        """start, restart, interrupt or shutdown; returns the state after it."""
        if action == "shutdown":
            session = self.sessions.get(notebook_id)
            if session is not None:
                await session.shutdown()
        elif action == "interrupt":
            await self.interrupt(notebook_id)
        elif action == "start":
            await (await self.session(notebook_id)).start()
        elif action == "restart":
            await (await self.session(notebook_id)).restart()
        else:
            raise ValueError(action)
        return self.status(notebook_id)

    async def forget(self, notebook_id: str) -> None:
        """The notebook was deleted: shut its kernel down."""
        session = self.sessions.get(notebook_id)
        if session is not None:
            await session.shutdown("the notebook was deleted")

    async def shutdown_all(self) -> None:
        """Stop accepting work and shut every kernel down (in parallel)."""
        self._accepting = False
        async with trio.open_nursery() as nursery:
            for session in list(self.sessions.values()):
                nursery.start_soon(_shutdown_one, session)


async def _shutdown_one(session: KernelSession) -> None:
    with trio.move_on_after(15):
        await session.shutdown("the server shut down")


async def _probe_loop_lag(interval: float = 0.1) -> None:
    """Record how late a timer fires: the trio loop's responsiveness (`agora_loop_lag_seconds`)."""
    while True:
        due = trio.current_time() + interval
        await trio.sleep_until(due)
        metrics.LOOP_LAG.observe(max(0.0, trio.current_time() - due))


def status_json(status: KernelStatus) -> dict[str, Any]:
    """`{"state","name","queue"}` as `GET …/kernel` answers it (plus `running`)."""
    return {"state": status.state, "name": status.name, "queue": status.queue, "running": status.running}
