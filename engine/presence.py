"""Who is in a room: editors with their cursors, and how many viewers (never who).

The board only records changes and says whether anything changed since the last frame; the
room turns it into one shared `presence` frame at most every `interval` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.ot.text import transform_position
from engine.records import CommittedOp
from protocol import Presence


@dataclass(slots=True)
class EditorPresence:
    client: str
    user: dict[str, Any]
    cursor: dict[str, Any] | None
    v: int


class PresenceBoard:
    """Editors by connection key, viewer count, and a dirty flag."""

    def __init__(self) -> None:
        self.viewers = 0
        self.editors: dict[int, EditorPresence] = {}
        self.dirty = False

    def join(self, key: int, role: str, client: str, user: dict[str, Any], version: int) -> None:
        """A connection joined; `key` identifies it until `leave`."""
        if role == "editor":
            self.editors[key] = EditorPresence(client, user, None, version)
        else:
            self.viewers += 1
        self.dirty = True

    def leave(self, key: int, role: str) -> None:
        """A connection left (idempotent for editors)."""
        if role == "editor":
            if self.editors.pop(key, None) is not None:
                self.dirty = True
        else:
            self.viewers = max(0, self.viewers - 1)
            self.dirty = True

    def set_cursor(self, key: int, cursor: dict[str, Any] | None, version: int) -> None:
        """An editor moved its cursor (as of head `version`)."""
        editor = self.editors.get(key)
        if editor is not None and (editor.cursor != cursor or editor.v != version):
            editor.cursor = cursor
            editor.v = version
            self.dirty = True

    def apply(self, record: CommittedOp) -> None:
        """Carry every cursor through a committed op so it keeps pointing at the same text."""
        for component in record.op:
            if component.get("t") != "text":
                continue
            for editor in self.editors.values():
                cursor = editor.cursor
                if cursor is not None and cursor.get("cell") == component["id"]:
                    ops = component["ops"]
                    editor.cursor = {
                        "cell": cursor["cell"],
                        "anchor": transform_position(cursor["anchor"], ops),
                        "head": transform_position(cursor["head"], ops),
                    }
                    self.dirty = True
        for editor in self.editors.values():
            if editor.cursor is not None:
                editor.v = record.v

    def message(self) -> Presence:
        """The `presence` message; clears the dirty flag."""
        self.dirty = False
        return Presence(
            viewers=self.viewers,
            editors=[
                {"client": e.client, "user": e.user, "cursor": e.cursor, "v": e.v}
                for e in self.editors.values()
            ],
        )
