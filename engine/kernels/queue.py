"""A notebook's execution queue: execute requests (`Run`) and their cells waiting, in request order.

Cells from every editor's requests wait in one FIFO and run one at a time in the order they
were asked for (contract §4). The queue is bounded by `MAX_QUEUE`; overflow policy: an execute
that finds it full is refused (`queue_full`), nothing queued is ever dropped. Taking cells out
(an error aborts the rest of its request, a stopped kernel everything) is done here; committing
their `aborted` state is the session's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import trio

from engine.errors import Unavailable
from engine.ot.model import Notebook, ordered_cells

MAX_QUEUE = 10_000  # queued cells per notebook; beyond, an execute is refused


class Requester(Protocol):
    """The connection whose `execute` ran a cell: it alone gets `input_request`."""

    @property
    def closed(self) -> bool:
        """True once the connection is gone (nobody can answer its input() any more)."""

    def send_private(self, *chunks: bytes) -> None:
        """Send prepared WebSocket frames to this connection only."""


@dataclass(eq=False, slots=True)
class Run:
    """One execute request: its cells in order, who asked, and when it is over."""

    cells: list[str]
    requester: Requester | None
    remaining: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    def finish_one(self) -> None:
        """One of the request's cells has ended (in any state); `done` is set after the last."""
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


Item = tuple[str, Run]  # a queued cell and the request it belongs to


def code_cells(nb: Notebook, wanted: list[str] | None) -> list[str]:
    """The live code cells among `wanted`, in the order given and without repeats (every live
    code cell in visible order when `wanted` is None)."""
    if wanted is None:
        return [c.id for c in ordered_cells(nb) if c.cell_type == "code"]
    cells = nb.cells
    return [
        cid
        for cid in dict.fromkeys(wanted)
        if cid in cells and cells[cid].cell_type == "code" and not cells[cid].deleted
    ]


class ExecutionQueue:
    """The cells waiting to run, oldest first; iterating yields `(cell id, Run)` pairs."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def cells(self) -> list[str]:
        """The waiting cell ids in the order they will run."""
        return [cell for cell, _ in self._items]

    def ensure_room(self) -> None:
        """`Unavailable` (`queue_full`) when no further execute may be queued."""
        if len(self._items) >= MAX_QUEUE:
            raise Unavailable("too many cells are waiting to run in this notebook", code="queue_full")

    def add(self, run: Run) -> None:
        """Queue every cell of `run` behind what waits already."""
        self._items.extend((cid, run) for cid in run.cells)

    def pop(self) -> Item:
        """Take the next cell to run (the queue must not be empty)."""
        return self._items.popleft()

    def snapshot(self) -> list[Item]:
        """What waits now (a copy: later changes to the queue do not show in it)."""
        return list(self._items)

    def take_where(self, doomed: Callable[[Item], bool]) -> list[Item]:
        """Remove and return, in queue order, the items for which `doomed` is true."""
        taken = [item for item in self._items if doomed(item)]
        self._items = deque(item for item in self._items if item not in taken)
        return taken

    def take(self, only: list[Item] | None = None) -> list[Item]:
        """Remove and return every waiting item, or those of `only` (by identity) still waiting."""
        if only is None:
            items, self._items = list(self._items), deque()
            return items
        items = [item for item in self._items if any(item is o for o in only)]
        self._items = deque(item for item in self._items if not any(item is o for o in only))
        return items
