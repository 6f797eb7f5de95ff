"""Where a kernel's results go: the notebook's room (the only way kernels touch a notebook).

`NotebookSink` is what the kernel package needs; `RoomSink` implements it on the `Engine`:
components are validated by `protocol` and committed in the room like any op (durable, then
broadcast, kept in history), under the kernel's own client id. The room is looked up for every
commit, so a room that closed while its kernel ran is simply opened again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from engine.document import KERNEL_CLIENT, Document, Rejected
from engine.ot.model import Notebook
from protocol import ProtocolError, validate_op

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger("agora.kernels")
T = TypeVar("T")
Component = dict[str, Any]
KERNEL_USER = "kernel"
MAX_COMPONENTS = 900  # below protocol's per-op bound: a larger batch is split into several ops


class NotebookSink(Protocol):
    """One notebook as a kernel sees it."""

    async def commit(self, build: Callable[[Notebook], list[Component]]) -> None:
        """Commit the components `build` returns for the head document (nothing when empty)."""

    async def read(self, fn: Callable[[Notebook], T]) -> T:
        """`fn(head document)`."""

    def broadcast(self, frame: bytes) -> None:
        """Send one prepared WebSocket frame to every connected member now."""


def _valid(op: list[Component]) -> list[Component]:
    try:
        return validate_op(op, allow_server=True)
    except ProtocolError:
        kept: list[Component] = []
        for comp in op:  # keep what is valid; a kernel's odd output must not lose the rest
            try:
                kept.extend(validate_op([comp], allow_server=True))
            except ProtocolError as exc:
                log.warning("dropped a kernel output component: %s", exc.message)
        return kept


class RoomSink:
    """`NotebookSink` on the engine's rooms."""

    def __init__(self, engine: Engine, notebook_id: str) -> None:
        self.engine = engine
        self.notebook_id = notebook_id

    async def commit(self, build: Callable[[Notebook], list[Component]]) -> None:
        room = await self.engine.room(self.notebook_id)

        def apply(doc: Document) -> None:
            op = build(doc.notebook)
            for start in range(0, len(op), MAX_COMPONENTS):
                chunk = _valid(op[start : start + MAX_COMPONENTS])
                if not chunk:
                    continue
                try:
                    doc.commit_local(chunk, KERNEL_CLIENT, KERNEL_USER, int(time.time() * 1000))
                except Rejected as exc:
                    log.warning("notebook %s: kernel output rejected: %s", self.notebook_id, exc.message)
                    # e.g. the notebook is at its size cap: the cells' run state must still land
                    states = [c for c in chunk if c["t"] in ("exec_state", "exec_count")]
                    if states:
                        try:
                            doc.commit_local(states, KERNEL_CLIENT, KERNEL_USER, int(time.time() * 1000))
                        except Rejected:
                            pass

        await room.call(apply)

    async def read(self, fn: Callable[[Notebook], T]) -> T:
        room = await self.engine.room(self.notebook_id)
        return await room.call(lambda doc: fn(doc.notebook))

    def broadcast(self, frame: bytes) -> None:
        room = self.engine.registry.get_open(self.notebook_id)
        if room is not None:
            for member in list(room.members.values()):
                member.peer.send_private(frame)
