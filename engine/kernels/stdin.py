"""The stdin broker: a running cell's `input()` / `getpass()` asked of the one connection whose
`execute` ran it (contract §4), and its answer passed back to the kernel.

At most one input is pending per notebook (cells run one at a time). The prompt goes to the
requester alone as `input_request`; its `input_reply` becomes the kernel's `input_reply` and is
echoed into the cell's stdout (a password is not). An input nobody can answer (an HTTP execute,
or the requester's connection closed before or while the cell waits) ends the cell in error by
interrupting it, never a hang: the requester is watched while the input is pending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from engine.kernels.channels import Message
from engine.kernels.process import KernelProcess
from engine.kernels.queue import Requester
from engine.kernels.routing import Execution
from protocol import InputRequest, encode, wsframe

Spawn = Callable[[Callable[[], Awaitable[object]]], None]
WATCH_INTERVAL = 0.25  # seconds between checks that the requester of a pending input is still there


@dataclass(slots=True)
class PendingInput:
    """An `input_request` the kernel waits on: the run, the request's header (the reply's
    parent) and what to echo."""

    execution: Execution
    header: dict[str, Any]
    prompt: str
    password: bool


class StdinBroker:
    """One notebook's pending `input()`. `kernel_now` returns the session's current kernel,
    `output_due` wakes the output flusher, `spawn` starts a task in the session's nursery."""

    def __init__(
        self,
        kernel_now: Callable[[], KernelProcess | None],
        output_due: Callable[[], None],
        spawn: Spawn,
    ) -> None:
        self.kernel_now = kernel_now
        self.output_due = output_due
        self.spawn = spawn
        self.pending: PendingInput | None = None

    def on_request(self, kernel: KernelProcess, msg: Message, execution: Execution) -> None:
        """The kernel's `input_request` `msg` for `execution`: ask its requester, or end the
        cell in error when nobody can answer."""
        prompt = str(msg.content.get("prompt", ""))
        password = bool(msg.content.get("password"))
        requester = execution.run.requester
        if requester is None or requester.closed:
            self._no_input(execution, kernel, "the connection that ran this cell has gone")
            return
        self.pending = PendingInput(execution, msg.header, prompt, password)
        requester.send_private(wsframe.text_frame(encode(InputRequest(execution.cell, prompt, password))))
        self.spawn(partial(self._watch_requester, self.pending, kernel))

    def answer(self, requester: Requester, value: str) -> bool:
        """Answer the pending `input()` if `requester` is the one it asked; False otherwise."""
        pending = self.pending
        kernel = self.kernel_now()
        if pending is None or kernel is None or pending.execution.run.requester is not requester:
            return False
        self.pending = None
        _, frames = kernel.codec.request("input_reply", {"value": value}, parent=pending.header)
        kernel.stdin.send(frames)
        echo = pending.prompt + ("" if pending.password else value) + "\n"
        pending.execution.output.stream("stdout", echo)
        self.output_due()
        return True

    def cancel(self) -> None:
        """The run ended: an input still pending can no longer be answered."""
        self.pending = None

    def _no_input(self, execution: Execution, kernel: KernelProcess, why: str) -> None:
        """input() that nobody can answer: an error in the cell (by interrupting it), never a hang."""
        execution.output.stream("stderr", f"input() cannot be answered: {why}.\n")
        self.output_due()
        self.spawn(kernel.interrupt)

    async def _watch_requester(self, pending: PendingInput, kernel: KernelProcess) -> None:
        requester = pending.execution.run.requester
        while self.pending is pending and self.kernel_now() is kernel:
            if requester is None or requester.closed:
                self.pending = None
                self._no_input(pending.execution, kernel, "the connection that ran this cell has gone")
                return
            await trio.sleep(WATCH_INTERVAL)
