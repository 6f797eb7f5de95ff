"""Where a kernel's messages go: shell and iopub messages to the run they belong to, and each
run's due output into the notebook.

Every `execute_request` is one `Execution`, found again by its msg_id (the parent id of the
messages it causes). The last `KEEP_RUNS` executions stay routable, so output a finished cell's
background thread prints late still lands in that cell. iopub contents are fed synchronously
into the run's `CellOutput` (which caps and paces them); `flush_forever` commits what is due.
The `execute_reply` on shell and the iopub `busy`/`idle` statuses mark the run's progress, and
the iopub status of a `kernel_info_request` tells the session that its subscription is live.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from engine import metrics
from engine.errors import NotFound, Unavailable
from engine.kernels.channels import BadMessage, Message
from engine.kernels.outputs import CellOutput
from engine.kernels.process import KernelProcess
from engine.kernels.queue import Run
from engine.ot.model import Notebook

log = logging.getLogger("agora.kernels")

Component = dict[str, Any]
Build = Callable[[Notebook], list[Component]]
KEEP_RUNS = 32  # finished runs whose late output (background threads) is still routed


@dataclass(eq=False, slots=True)
class Execution:
    """One cell's run on the kernel (one `execute_request`) and what has been seen of it."""

    cell: str
    run: Run
    output: CellOutput
    reply: Message | None = None
    busy: trio.Event = field(default_factory=trio.Event)  # the kernel started executing it
    idle: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)


class Router:
    """Routes one notebook's kernel messages; `progress` is called when a run may have moved on
    (its reply or its final `idle` arrived)."""

    def __init__(self, notebook_id: str, progress: Callable[[], None]) -> None:
        self.notebook_id = notebook_id
        self.progress = progress
        self.executions: OrderedDict[str, Execution] = OrderedDict()
        self._kernel_info: dict[str, trio.Event] = {}
        self._output_ready = trio.Event()

    def track(self, msg_id: str, execution: Execution) -> None:
        """Route the messages whose parent is `msg_id` to `execution` (forgetting the oldest
        beyond `KEEP_RUNS`)."""
        self.executions[msg_id] = execution
        while len(self.executions) > KEEP_RUNS:
            self.executions.popitem(last=False)

    def expect_kernel_info(self, msg_id: str) -> trio.Event:
        """An event set when iopub shows a status for the `kernel_info_request` `msg_id`."""
        seen = self._kernel_info[msg_id] = trio.Event()
        return seen

    def forget_kernel_info(self, msg_id: str) -> None:
        """Stop watching for the iopub status of the `kernel_info_request` `msg_id`."""
        del self._kernel_info[msg_id]

    def output_due(self) -> None:
        """Some run's output has grown: wake the flusher to commit what is due."""
        self._output_ready.set()

    def decode(self, kernel: KernelProcess, frames: list[bytes]) -> Message | None:
        """The message in `frames`, or None (logged) when it is malformed or badly signed."""
        try:
            return kernel.codec.decode(frames)
        except BadMessage as exc:
            log.warning("notebook %s: dropped a kernel message: %s", self.notebook_id, exc)
            return None

    def on_shell(self, kernel: KernelProcess, frames: list[bytes]) -> None:
        """A shell message: an `execute_reply` ends its run (the run task is woken)."""
        msg = self.decode(kernel, frames)
        if msg is None or msg.parent_id is None:
            return
        if msg.msg_type == "execute_reply":
            execution = self.executions.get(msg.parent_id)
            if execution is not None:
                execution.reply = msg
                self.progress()

    def on_iopub(self, kernel: KernelProcess, frames: list[bytes]) -> None:
        """An iopub message: output goes into its run's `CellOutput`, statuses mark progress."""
        msg = self.decode(kernel, frames)
        metrics.KERNEL_IOPUB_MESSAGES.inc()
        if msg is None or msg.parent_id is None:
            return
        if msg.parent_id in self._kernel_info:
            self._kernel_info[msg.parent_id].set()
            return
        execution = self.executions.get(msg.parent_id)
        if execution is None:
            return
        content, kind, out = msg.content, msg.msg_type, execution.output
        transient = content.get("transient")
        display_id = transient.get("display_id") if isinstance(transient, dict) else None
        display_id = display_id if isinstance(display_id, str) and display_id else None
        if kind == "stream":
            name, text = content.get("name"), content.get("text")
            if name in ("stdout", "stderr") and isinstance(text, str):
                out.stream(name, text)
        elif kind in ("display_data", "execute_result"):
            output: dict[str, Any] = {
                "output_type": kind,
                "data": content.get("data") or {},
                "metadata": content.get("metadata") or {},
            }
            if kind == "execute_result":
                output = {
                    "output_type": kind,
                    "execution_count": content.get("execution_count"),
                    "data": output["data"],
                    "metadata": output["metadata"],
                }
            out.output(output, display_id)
        elif kind == "update_display_data":
            if display_id is not None:
                out.update_display(
                    display_id,
                    {
                        "output_type": "display_data",
                        "data": content.get("data") or {},
                        "metadata": content.get("metadata") or {},
                    },
                )
        elif kind == "error":
            out.output(
                {
                    "output_type": "error",
                    "ename": str(content.get("ename", "")),
                    "evalue": str(content.get("evalue", "")),
                    "traceback": [str(t) for t in content.get("traceback") or []],
                },
                None,
            )
        elif kind == "clear_output":
            out.clear_output(bool(content.get("wait")))
        elif kind == "status":
            if content.get("execution_state") == "busy":
                execution.busy.set()
            elif content.get("execution_state") == "idle":
                execution.idle.set()
                self.progress()
            return
        else:
            return
        if out.pending:
            self._output_ready.set()

    async def flush_forever(self, commit: Callable[[Build], Awaitable[None]]) -> None:
        """Commit due output of every routed run through `commit` (first at once, then paced;
        what is left at a run's end the session commits with its final state). Never returns."""
        while True:
            self._output_ready = trio.Event()
            due = min(
                (e.output.due_at() for e in self.executions.values() if e.output.pending),
                default=float("inf"),
            )
            if due > trio.current_time():
                with trio.move_on_at(due):
                    await self._output_ready.wait()
                continue
            now = trio.current_time()
            ready = [
                e.output
                for e in list(self.executions.values())
                if e.output.pending and e.output.due_at() <= now
            ]
            try:
                await commit(_take_all(ready, now))
            except NotFound:  # the notebook was deleted: its output has nowhere to go
                for out in ready:
                    out.take(now)
            except Unavailable as exc:  # closing or failing storage: retry a little later
                log.warning("notebook %s: kernel output not committed: %s", self.notebook_id, exc.message)
                await trio.sleep(0.5)


def _take_all(outputs: list[CellOutput], now: float) -> Build:
    """A commit builder taking the pending components of `outputs` (inside the room)."""
    return lambda nb: [c for out in outputs for c in out.take(now)]
