"""The one exception the OT core raises: an op that cannot be applied or is malformed."""

from __future__ import annotations


class OpError(Exception):
    """An op (or one of its components) is invalid for the document it is applied to.

    `code` is a snake_case machine code (`unknown_cell`, `cell_exists`, `text_out_of_range`,
    `invalid_op`, `invalid_pos`); `message` is a human sentence. The WebSocket layer turns it
    into `{"type":"reject","seq":S,"error":{"code","message"}}`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
