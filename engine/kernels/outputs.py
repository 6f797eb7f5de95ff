"""One cell run's output on its way from iopub to the notebook: caps, coalescing, pacing.

`CellOutput` turns decoded iopub contents into server components (contract §5) and holds them
until they are due: the first output of a run at once, then at most `rate` commits a second,
and everything at once when the run finishes (§8 "output pace"). Stream text is coalesced and
`\\r`/`\\b` resolved inside each commit (`engine.kernels.terminal`). The per-cell caps bound what
is kept: beyond them output is dropped (counted) and one notice says how much, at the end.
`clear_output(wait=True)` clears at the next output. Nothing here blocks or does I/O: the
iopub reader feeds it synchronously, whatever the viewers do (overflow policy: the cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.kernels.terminal import reduce_piece

Component = dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """Per-cell caps and pace (flags `--output-max-bytes`, `--output-max-items`)."""

    max_bytes: int = 1024 * 1024
    max_items: int = 500
    rate: float = 10.0  # commits per second per cell after the first output


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _clip(text: str, budget: int) -> str:
    if _size(text) <= budget:
        return text
    if text.isascii():
        return text[:budget]
    return text.encode("utf-8", "surrogatepass")[:budget].decode("utf-8", "ignore")


@dataclass(slots=True)
class _Stream:
    name: str
    chunks: list[str] = field(default_factory=list)


class CellOutput:
    """Output of one run of one cell (one execute_request)."""

    def __init__(self, cell_id: str, limits: OutputLimits) -> None:
        self.cell_id = cell_id
        self.limits = limits
        self._pending: list[Component | _Stream] = []
        self._clear_pending = False  # clear_output(wait=True) seen: clear at the next output
        self._used_bytes = 0
        self._items = 0
        self._last_stream: str | None = None  # name of the cell's last output when a stream
        self.dropped_bytes = 0
        self.dropped_items = 0
        self.committed_bytes = 0
        self._commits = 0
        self._last_commit = -1e18
        self.finished = False

    # -- feeding (from the iopub reader) ----------------------------------------------------

    @property
    def pending(self) -> bool:
        """True when something waits to be committed."""
        return bool(self._pending)

    def _before_output(self) -> None:
        if self._clear_pending:
            self._clear_pending = False
            self.clear()

    def stream(self, name: str, text: str) -> None:
        """Append stream text (coalesced with the pending text of the same stream)."""
        if not text:
            return
        self._before_output()
        budget = self.limits.max_bytes - self._used_bytes
        new_item = self._last_stream != name
        if budget <= 0 or (new_item and self._items >= self.limits.max_items):
            self.dropped_bytes += _size(text)
            return
        kept = _clip(text, budget)
        self.dropped_bytes += _size(text) - _size(kept) if kept is not text else 0
        self._used_bytes += _size(kept)
        if new_item:
            self._items += 1
            self._last_stream = name
        last = self._pending[-1] if self._pending else None
        if isinstance(last, _Stream) and last.name == name:
            last.chunks.append(kept)
        else:
            self._pending.append(_Stream(name, [kept]))

    def output(self, output: dict[str, Any], display_id: str | None) -> None:
        """Append a rich output (display_data, execute_result, error)."""
        self._before_output()
        size = len(orjson.dumps(output))
        if self._items >= self.limits.max_items or self._used_bytes + size > self.limits.max_bytes:
            self.dropped_items += 1
            self.dropped_bytes += size
            return
        self._items += 1
        self._used_bytes += size
        self._last_stream = None
        comp: Component = {"t": "outputs_append", "id": self.cell_id, "output": output}
        if display_id is not None:
            comp["display_id"] = display_id
        self._pending.append(comp)

    def update_display(self, display_id: str, output: dict[str, Any]) -> None:
        """Replace every output created with `display_id`, in any cell; the last update of a
        display_id in one commit wins (earlier ones are dropped)."""
        self._pending = [
            c
            for c in self._pending
            if isinstance(c, _Stream) or c["t"] != "display_update" or c["display_id"] != display_id
        ]
        self._pending.append({"t": "display_update", "display_id": display_id, "output": output})

    def clear_output(self, wait: bool) -> None:
        """clear_output: now, or (wait) right before the next output of this cell."""
        if wait:
            self._clear_pending = True
        else:
            self._clear_pending = False
            self.clear()

    def clear(self) -> None:
        """Empty the cell: pending outputs of this cell are dropped, the caps start over."""
        self._pending = [
            c for c in self._pending if not isinstance(c, _Stream) and c["t"] == "display_update"
        ]
        self._pending.insert(0, {"t": "outputs_clear", "id": self.cell_id})
        self._used_bytes = 0
        self._items = 0
        self._last_stream = None

    # -- pacing and taking (from the flusher) ------------------------------------------------

    def due_at(self) -> float:
        """When the pending output may be committed (trio clock): at once for the first
        output of the run and at the end, else `1/rate` after the previous commit."""
        if not self._pending:
            return float("inf")
        if self._commits == 0 or self.finished:
            return -float("inf")
        return self._last_commit + 1.0 / self.limits.rate

    def take(self, now: float) -> list[Component]:
        """The pending components, stream text coalesced and `\\r`/`\\b` resolved; marks a commit."""
        out: list[Component] = []
        for item in self._pending:
            if isinstance(item, _Stream):
                text = reduce_piece("".join(item.chunks), continuation=True)
                self.committed_bytes += _size(text)
                out.append({"t": "stream_append", "id": self.cell_id, "name": item.name, "text": text})
            else:
                out.append(item)
        self._pending = []
        if out:
            self._commits += 1
            self._last_commit = now
        return out

    def notice(self) -> Component | None:
        """The one truncation notice of this run (None when nothing was dropped)."""
        if not self.dropped_bytes and not self.dropped_items:
            return None
        what = f"{self.dropped_bytes} bytes" + (
            f" in {self.dropped_items} outputs" if self.dropped_items else ""
        )
        text = (
            f"[output truncated: {what} omitted; a cell keeps at most {self.limits.max_bytes} bytes "
            f"and {self.limits.max_items} outputs]\n"
        )
        return {
            "t": "outputs_append",
            "id": self.cell_id,
            "output": {"output_type": "stream", "name": "stderr", "text": text},
        }
