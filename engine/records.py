"""The committed-op record: what the room commits, the op log stores and the wire carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Component = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommittedOp:
    """One accepted op at version `v` (versions start at 1; version 0 is the initial content)."""

    v: int
    client: str
    seq: int
    user: str
    time: int  # epoch milliseconds
    op: list[Component]

    def wire(self) -> dict[str, Any]:
        """The entry of an `ops` frame: `{"v","client","seq","user","op"}`."""
        return {"v": self.v, "client": self.client, "seq": self.seq, "user": self.user, "op": self.op}

    def history_item(self) -> dict[str, Any]:
        """The entry of `GET …/history`: the wire entry plus `time`."""
        return {
            "v": self.v,
            "client": self.client,
            "seq": self.seq,
            "user": self.user,
            "time": self.time,
            "op": self.op,
        }
