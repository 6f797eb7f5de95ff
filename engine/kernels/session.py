"""One notebook's kernel: its state machine, and the wiring of its queue, output routing and stdin.

States (contract §2/§4): none → starting → idle ⇄ busy → dead (and back to starting on the
next execute or start). Cells run one at a time in request order across editors; a cell's
`exec_state` goes queued → running → done / error, and an error aborts the rest of its request
(`aborted`). The end of a cell is its `execute_reply` on shell (then the iopub `idle` is
awaited briefly, so no trailing output is lost). iopub is read all the time into each run's
`CellOutput` (bounded by the caps), a flusher commits what is due (first output at once, then
at most 10 commits per cell per second). A kernel that dies ends its running cell in `error`
with a visible message and its queued cells in `aborted`; one that ignores an interrupt for
`interrupt_grace` seconds is restarted the same way.

The parts live in their own modules: `queue` (requests and the cells waiting), `routing` (kernel
messages to each run's output, and output to the notebook), `stdin` (the input() broker).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
import zmq

from engine import metrics
from engine.errors import NotFound, Unavailable
from engine.kernels.outputs import CellOutput, OutputLimits
from engine.kernels.process import KernelProcess, resolve_kernel_name
from engine.kernels.queue import ExecutionQueue, Requester, Run, code_cells
from engine.kernels.routing import Build, Component, Execution, Router
from engine.kernels.sink import NotebookSink
from engine.kernels.stdin import StdinBroker
from engine.ot.model import Notebook
from protocol import Kernel, encode, wsframe

log = logging.getLogger("agora.kernels")


@dataclass(frozen=True, slots=True)
class KernelSettings:
    """Process-wide kernel settings (see docs/kernels.md)."""

    data_dir: Path
    memory: int | None = 2 * 1024**3
    idle_timeout: float = 3600.0
    interrupt_grace: float = 5.0
    start_timeout: float = 60.0
    outputs: OutputLimits = field(default_factory=OutputLimits)


class KernelStopped(Exception):
    """The kernel went away during a run (died, restarted, shut down); `message` says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KernelSession:
    """The kernel of one notebook. `serve` runs it (in the manager's nursery)."""

    def __init__(
        self,
        notebook_id: str,
        sink: NotebookSink,
        settings: KernelSettings,
        context: zmq.Context[zmq.Socket[bytes]],
        may_start: Callable[[], bool],
    ) -> None:
        self.notebook_id = notebook_id
        self.sink = sink
        self.settings = settings
        self.context = context
        self.may_start = may_start
        self.state = "none"
        self.name: str | None = None
        self.queue = ExecutionQueue()
        self.current: Execution | None = None
        self.kernel: KernelProcess | None = None
        self.last_active = trio.current_time()
        self._work = trio.Event()
        self._wake_run = trio.Event()
        self._commit_lock = trio.Lock()
        self._start_lock = trio.Lock()
        self._kernel_scope: trio.CancelScope | None = None
        self._stopped: str | None = None  # why the current kernel went away during a run
        self._nursery: trio.Nursery | None = None
        self.router = Router(notebook_id, self._progress)
        self.stdin = StdinBroker(lambda: self.kernel, self.router.output_due, self._spawn)
        self.closed = trio.Event()

    # -- state and frames --------------------------------------------------------------------

    def frame(self) -> bytes:
        """The `kernel` frame for the current state."""
        running = self.current.cell if self.current is not None else None
        queue = self.queue.cells()
        return wsframe.text_frame(encode(Kernel(self.state, queue, self.name, running)))

    def _set_state(self, state: str) -> None:
        self.state = state
        self._announce()

    def _announce(self) -> None:
        self.sink.broadcast(self.frame())

    def _progress(self) -> None:
        """Wake the run task: the running cell may have ended or its kernel stopped."""
        self._wake_run.set()

    def _spawn(self, task: Callable[[], Awaitable[object]]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(task)

    @property
    def live(self) -> bool:
        """True while a kernel process is up (starting, idle or busy)."""
        return self.state in ("starting", "idle", "busy")

    # -- requests (any task) -------------------------------------------------------------------

    async def execute(self, cells: list[str] | None, requester: Requester | None) -> Run:
        """Queue the code cells among `cells` (all code cells in order when None); their
        `exec_state` becomes `queued` before this returns. `Unavailable` when the kernel limit
        is reached or the queue is full."""
        if not self.live and not self.may_start():
            raise Unavailable("the server runs as many kernels as it may; try later", code="kernel_limit")
        self.queue.ensure_room()
        run = Run([], requester)

        def queue_cells(nb: Notebook) -> list[Component]:
            run.cells = code_cells(nb, cells)
            return [{"t": "exec_state", "id": cid, "state": "queued"} for cid in run.cells]

        async with self._commit_lock:
            await self.sink.commit(queue_cells)
        run.remaining = len(run.cells)
        if not run.cells:
            run.done.set()
            return run
        self.queue.add(run)
        self._work.set()
        self._announce()
        return run

    async def start(self) -> None:
        """Start the kernel when none runs (no-op otherwise). `Unavailable` on failure."""
        if self.kernel is not None and self.state in ("idle", "busy"):
            return
        if not self.may_start():
            raise Unavailable("the server runs as many kernels as it may; try later", code="kernel_limit")
        await self._start()

    async def interrupt(self) -> None:
        """Interrupt the running cell; a kernel that ignores it is restarted after the grace."""
        execution, kernel = self.current, self.kernel
        if execution is None or kernel is None or self.state != "busy":
            return
        # A signal that arrives before the kernel took the request up would be lost.
        with trio.move_on_after(self.settings.interrupt_grace):
            await execution.busy.wait()
        if self.current is not execution or self.kernel is not kernel:
            return
        await kernel.interrupt()
        if self._nursery is not None:
            self._nursery.start_soon(self._escalate, execution, kernel)

    async def restart(self) -> None:
        """Stop the kernel (its cells end error/aborted) and start a fresh one."""
        await self._stop_kernel("the kernel was restarted")
        await self.start()

    async def shutdown(self, reason: str = "the kernel was shut down") -> None:
        """Stop the kernel; state `none`."""
        await self._stop_kernel(reason)
        self._set_state("none")

    def answer_input(self, requester: Requester, value: str) -> bool:
        """Answer this notebook's pending `input()` if `requester` is the one it asked."""
        return self.stdin.answer(requester, value)

    # -- the session task ------------------------------------------------------------------------

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run cells until cancelled; on the way out the kernel is shut down."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.router.flush_forever, self._commit)
                task_status.started()
                await self._run_queue()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop_kernel("the server shut down")
                self.closed.set()

    async def _run_queue(self) -> None:
        while True:
            if not self.queue:
                self._work = trio.Event()
                idle = self.state == "idle"
                deadline = self.last_active + self.settings.idle_timeout if idle else float("inf")
                with trio.move_on_at(deadline):
                    await self._work.wait()
                if not self.queue and self.state == "idle" and trio.current_time() >= deadline:
                    log.info(
                        "notebook %s: kernel idle for %.0f s, shutting down",
                        self.notebook_id,
                        self.settings.idle_timeout,
                    )
                    await self.shutdown("the kernel was idle too long")
                continue
            if self.kernel is None or self.state in ("none", "dead", "starting"):
                try:
                    await self._start()
                except Unavailable as exc:
                    await self._abort_queue(exc.message)
                continue  # the queue may have changed meanwhile (a restart aborts it)
            cell, run = self.queue.pop()
            try:
                await self._run_cell(cell, run)
            except (NotFound, Unavailable) as exc:  # the notebook went away or cannot take writes
                log.warning("notebook %s: run of %s ended: %s", self.notebook_id, cell, exc.message)
                run.finish_one()
            self.last_active = trio.current_time()

    async def _start(self) -> None:
        async with self._start_lock:  # a second caller waits for the first one's kernel
            if self.kernel is None or self.state in ("none", "dead"):
                await self._launch()

    async def _launch(self) -> None:
        if self.kernel is not None:  # died while idle: reap it first
            await self._stop_kernel("the kernel died")
        self._set_state("starting")
        wanted = await self.sink.read(lambda nb: (nb.metadata.get("kernelspec") or {}).get("name"))
        self.name = await trio.to_thread.run_sync(resolve_kernel_name, wanted)
        base = self.settings.data_dir / "kernels"
        try:
            kernel = await KernelProcess.launch(
                self.name,
                base / "work" / self.notebook_id,
                base / "run",
                self.settings.memory,
                self.context,
            )
        except Exception as exc:
            log.error("notebook %s: kernel %s did not start: %s", self.notebook_id, self.name, exc)
            self._set_state("dead")
            raise Unavailable(f"the kernel did not start: {exc}", code="kernel_failed") from None
        self.kernel = kernel
        self._stopped = None
        assert self._nursery is not None
        self._kernel_scope = await self._nursery.start(self._kernel_tasks, kernel)
        metrics.KERNELS.inc()
        try:
            with trio.fail_after(self.settings.start_timeout):
                await self._wait_ready(kernel)
        except (trio.TooSlowError, KernelStopped):
            await self._stop_kernel("the kernel did not start")
            self._set_state("dead")
            raise Unavailable("the kernel did not become ready", code="kernel_failed") from None
        self.last_active = trio.current_time()
        self._set_state("idle")

    async def _wait_ready(self, kernel: KernelProcess) -> None:
        """kernel_info until its status shows on iopub: only then is our subscription live, and no
        output can be lost to it (a zmq SUB socket drops what is published before it joined)."""
        while True:
            if self._stopped is not None:
                raise KernelStopped(self._stopped)
            msg_id, frames = kernel.codec.request("kernel_info_request", {})
            seen = self.router.expect_kernel_info(msg_id)
            kernel.shell.send(frames)
            with trio.move_on_after(0.5):
                await seen.wait()
            self.router.forget_kernel_info(msg_id)
            if seen.is_set():
                return

    async def _kernel_tasks(
        self, kernel: KernelProcess, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kernel.iopub.receive_loop, lambda f: self.router.on_iopub(kernel, f))
                nursery.start_soon(kernel.shell.receive_loop, lambda f: self.router.on_shell(kernel, f))
                nursery.start_soon(kernel.stdin.receive_loop, lambda f: self._on_stdin(kernel, f))
                nursery.start_soon(kernel.control.receive_loop, lambda f: None)
                task_status.started(scope)
                code = await kernel.wait_exit()
                if self.kernel is kernel and self._stopped is None:
                    how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
                    log.warning("notebook %s: kernel died (%s)", self.notebook_id, how)
                    self._stopped = (
                        f"The kernel died ({how}); its variables are lost. "
                        "Run a cell again to start a new kernel."
                    )
                    self._set_state("dead")
                    self._wake_run.set()
                    if self.current is None and self._nursery is not None:  # died while idle
                        self._nursery.start_soon(self._reap, kernel)
                nursery.cancel_scope.cancel()

    async def _reap(self, kernel: KernelProcess) -> None:
        if self.kernel is kernel and self._stopped is not None:
            await self._stop_kernel(self._stopped)

    # -- stdin (synchronous, called by its receiving task) ------------------------------------------

    def _on_stdin(self, kernel: KernelProcess, frames: list[bytes]) -> None:
        msg = self.router.decode(kernel, frames)
        if msg is None or msg.msg_type != "input_request":
            return
        execution = self.current
        if execution is None or msg.parent_id not in self.router.executions:
            return
        self.stdin.on_request(kernel, msg, execution)

    # -- running one cell --------------------------------------------------------------------------

    async def _commit(self, build: Build) -> None:
        async with self._commit_lock:
            await self.sink.commit(build)

    async def _run_cell(self, cell: str, run: Run) -> None:
        kernel = self.kernel
        if kernel is None:  # stopped between the start and this cell (a restart raced it)
            await self._commit(
                lambda nb: [{"t": "exec_state", "id": cell, "state": "aborted"}] if cell in nb.cells else []
            )
            run.finish_one()
            return
        source = await self.sink.read(
            lambda nb: (
                nb.cells[cell].source
                if cell in nb.cells and nb.cells[cell].cell_type == "code" and not nb.cells[cell].deleted
                else None
            )
        )
        if source is None:  # deleted or changed type since it was queued
            await self._commit(
                lambda nb: [{"t": "exec_state", "id": cell, "state": "aborted"}] if cell in nb.cells else []
            )
            run.finish_one()
            return
        execution = Execution(cell, run, CellOutput(cell, self.settings.outputs))
        msg_id, frames = kernel.codec.request(
            "execute_request",
            {
                "code": source,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": run.requester is not None,
                "stop_on_error": True,
            },
        )
        self.router.track(msg_id, execution)
        self.current = execution
        self._set_state("busy")
        await self._commit(
            lambda nb: [
                {"t": "outputs_clear", "id": cell},
                {"t": "exec_count", "id": cell, "n": None},
                {"t": "exec_state", "id": cell, "state": "running"},
            ]
        )
        kernel.shell.send(frames)
        while execution.reply is None and self._stopped is None:
            self._wake_run = trio.Event()
            await self._wake_run.wait()
        if execution.reply is not None:  # iopub may still carry the tail of the output
            with trio.move_on_after(2.0):
                while not execution.idle.is_set() and self._stopped is None:
                    self._wake_run = trio.Event()
                    await self._wake_run.wait()
        self.stdin.cancel()
        self.current = None
        try:
            await self._finish(execution)
        finally:
            execution.ended.set()
        if self.kernel is kernel and self._stopped is None:
            self._set_state("idle")
        elif self._stopped is not None and self.kernel is kernel:  # died: reap it
            await self._stop_kernel(self._stopped, abort=False)
            if self.state != "none":
                self._set_state("dead")

    async def _finish(self, execution: Execution) -> None:
        """Commit the rest of a cell's output, its count and final state; abort the rest of its
        request after an error."""
        out, cell, run = execution.output, execution.cell, execution.run
        out.finished = True
        reply = execution.reply
        if reply is not None:
            status = reply.content.get("status")
            state = "done" if status == "ok" else "error"
            count = reply.content.get("execution_count")
            stopped = None
        else:
            state, count, stopped = "error", None, self._stopped or "the kernel stopped"
        # An error aborts the rest of its request; a stopped kernel, everything queued now.
        everything, failed = stopped is not None, state == "error"
        doomed = self.queue.take_where(lambda item: everything or (failed and item[1] is run))
        rest = [cid for cid, _ in doomed]

        def build(nb: Notebook) -> list[Component]:
            comps = out.take(trio.current_time())
            notice = out.notice()
            if notice is not None:
                comps.append(notice)
            if stopped is not None:
                comps.append(
                    {
                        "t": "outputs_append",
                        "id": cell,
                        "output": {"output_type": "stream", "name": "stderr", "text": stopped + "\n"},
                    }
                )
            if isinstance(count, int) and count >= 0:
                comps.append({"t": "exec_count", "id": cell, "n": count})
            comps.append({"t": "exec_state", "id": cell, "state": state})
            comps.extend(
                {"t": "exec_state", "id": cid, "state": "aborted"} for cid in rest if cid in nb.cells
            )
            return comps

        await self._commit(build)
        metrics.KERNEL_EXECUTIONS.labels(state).inc()
        metrics.KERNEL_OUTPUT_BYTES.labels("committed").inc(out.committed_bytes)
        metrics.KERNEL_OUTPUT_BYTES.labels("dropped").inc(out.dropped_bytes)
        run.finish_one()
        for _, other in doomed:
            other.finish_one()
        if doomed:
            self._announce()

    async def _abort_queue(self, message: str, only: list[tuple[str, Run]] | None = None) -> None:
        """End queued cells in `aborted` (all of them, or those of `only` still queued)."""
        items = self.queue.take(only)
        if not items:
            return
        log.info("notebook %s: %d queued cells aborted: %s", self.notebook_id, len(items), message)
        await self._commit(
            lambda nb: [
                {"t": "exec_state", "id": cid, "state": "aborted"} for cid, _ in items if cid in nb.cells
            ]
        )
        for _, run in items:
            run.finish_one()
        self._announce()

    # -- stopping --------------------------------------------------------------------------------

    async def _escalate(self, execution: Execution, kernel: KernelProcess) -> None:
        await trio.sleep(self.settings.interrupt_grace)
        if self.current is execution and self.kernel is kernel and self._stopped is None:
            log.warning(
                "notebook %s: kernel ignored an interrupt for %.0f s; restarting",
                self.notebook_id,
                self.settings.interrupt_grace,
            )
            await self._stop_kernel(
                f"The kernel did not stop within {self.settings.interrupt_grace:g} s of an interrupt, "
                "so it was restarted; its variables are lost."
            )
            if self.state != "none":
                try:
                    await self.start()
                except Unavailable as exc:
                    log.error("notebook %s: restart failed: %s", self.notebook_id, exc.message)

    async def _stop_kernel(self, reason: str, *, abort: bool = True) -> None:
        """Take the current kernel down: its running cell ends with `reason` and (with `abort`)
        the cells queued now end aborted; cells queued meanwhile run on the next kernel."""
        kernel = self.kernel
        if kernel is None:
            return
        self.kernel = None  # claimed: nobody else shuts this one down
        doomed = self.queue.snapshot() if abort else []
        if self._stopped is None:
            self._stopped = reason
        self._wake_run.set()
        execution = self.current
        if execution is not None:  # let the run task write the cell's end first
            with trio.move_on_after(5.0):
                await execution.ended.wait()
        if self._kernel_scope is not None:
            self._kernel_scope.cancel()
            self._kernel_scope = None
        await kernel.shutdown(now=self.state == "dead" or self._stopped != "the server shut down")
        metrics.KERNELS.dec()
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            try:
                await self._abort_queue(reason, doomed)
            except (NotFound, Unavailable):
                pass
        if self.state in ("starting", "idle", "busy"):
            self._set_state("dead")
