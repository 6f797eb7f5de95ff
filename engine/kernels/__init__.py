"""Jupyter kernels for notebooks (contract §2, §4, §5, §8).

- `manager.KernelService`: the process's kernels (limit, culling, shutdown).
- `session.KernelSession`: one notebook's kernel: state machine, queue, output routing, stdin.
- `process.KernelProcess`: launch / interrupt / shutdown through jupyter_client, death by pidfd.
- `channels`: ZMQ sockets driven from trio, message signing and decoding.
- `outputs.CellOutput`: caps, coalescing, pacing of one run's output; `terminal`: `\\r` and `\\b`.
- `sink`: how results reach the notebook (its room), and nothing else does.
"""

from engine.kernels.manager import KernelService, KernelStatus, status_json
from engine.kernels.outputs import OutputLimits
from engine.kernels.session import KernelSettings, Requester, Run
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
