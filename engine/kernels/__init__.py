"""Jupyter kernels for notebooks (contract §2, §4, §5, §8).

- `manager.KernelService`: the process's kernels (limit, culling, shutdown).
- `session.KernelSession`: one notebook's kernel: its state machine, start/stop/interrupt, wiring.
- `queue`: execute requests (`Run`) and the cells waiting, in request order (`ExecutionQueue`).
- `routing.Router`: shell/iopub messages to each run's `CellOutput`; due output to the notebook.
- `stdin.StdinBroker`: a cell's `input()` asked of the connection that ran it, and the answer.
- `process.KernelProcess`: launch / interrupt / shutdown through jupyter_client, death by pidfd.
- `channels`: ZMQ sockets driven from trio, message signing and decoding.
- `outputs.CellOutput`: caps, coalescing, pacing of one run's output; `terminal`: `\\r` and `\\b`.
- `sink`: how results reach the notebook (its room), and nothing else does.
"""

from engine.kernels.manager import KernelService, KernelStatus, status_json
from engine.kernels.outputs import OutputLimits
from engine.kernels.queue import Requester, Run
from engine.kernels.session import KernelSettings
from engine.kernels.sink import NotebookSink, RoomSink

__all__ = [
    "KernelService",
    "KernelSettings",
    "KernelStatus",
    "NotebookSink",
    "OutputLimits",
    "Requester",
    "RoomSink",
    "Run",
    "status_json",
]
