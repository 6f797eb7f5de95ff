"""`ProtocolError`: the one exception `protocol` raises, and the table of its codes.

A `ProtocolError` tells the WebSocket layer exactly what to do:

- ``close_code`` is not None: send ``{"type":"error","code","message"}`` and close the connection
  with that code (the frame was unusable: we cannot trust anything else in it).
- ``close_code`` is None: the frame was an ``op`` whose ``seq`` (and ``base``) were readable but
  whose payload is invalid; answer ``{"type":"reject","seq":seq,"error":{"code","message"}}``
  and keep the connection (the client resyncs). ``seq`` is then always set.

Error codes (``code``), their close code, and when they are raised:

======================  ==========  ==========================================================
code                    close       raised when
======================  ==========  ==========================================================
``message_too_large``   4413        the message exceeds ``Limits.max_message_bytes`` (UTF-8)
``invalid_utf8``        4400        the bytes are not valid UTF-8
``malformed_json``      4400        the text is not one JSON value (syntax, NaN, 1e400, depth)
``lone_surrogate``      4400/reject a string holds an unpaired UTF-16 surrogate (``"\\ud800"``);
                                    a reject when it sits in an op with a readable ``seq``
``not_an_object``       4400        the JSON value is not an object
``missing_field``       4400        a required top-level field is absent (``type``, ``seq``, …)
``unknown_field``       4400        a top-level field the message type does not define
``invalid_field``       4400        a top-level field has the wrong type or range (bool or
                                    float where an int is due, ``seq`` < 1, bad cursor, …)
``unknown_type``        4400        ``type`` is a string but not a client message type
``invalid_op``          reject      a component is malformed: unknown ``t`` or key, bad id,
                                    bad ``pos``, negative count, ``{"d":0}``, empty op, …
``server_component``    reject      a client sent a component only kernels may write
``op_too_large``        reject      too many components, text items or inserted characters
======================  ==========  ==========================================================

Other layers add their own codes (``base_too_old``, ``not_found``, …); they are not raised here.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_GONE",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_LARGE",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHORIZED",
    "ERROR_CODES",
    "ProtocolError",
]

#: WebSocket close codes of the contract (§4).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_GONE = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_TOO_LARGE = 4413

#: code → the close code it normally carries (None: answered with a ``reject`` frame).
#: ``lone_surrogate`` closes unless it is found inside an op with a readable ``seq``.
ERROR_CODES: dict[str, int | None] = {
    "message_too_large": CLOSE_TOO_LARGE,
    "invalid_utf8": CLOSE_PROTOCOL_ERROR,
    "malformed_json": CLOSE_PROTOCOL_ERROR,
    "lone_surrogate": CLOSE_PROTOCOL_ERROR,
    "not_an_object": CLOSE_PROTOCOL_ERROR,
    "missing_field": CLOSE_PROTOCOL_ERROR,
    "unknown_field": CLOSE_PROTOCOL_ERROR,
    "invalid_field": CLOSE_PROTOCOL_ERROR,
    "unknown_type": CLOSE_PROTOCOL_ERROR,
    "invalid_op": None,
    "server_component": None,
    "op_too_large": None,
}


class ProtocolError(Exception):
    """A client message that cannot be accepted.

    Attributes:
        code: a snake_case code from `ERROR_CODES`.
        message: a human sentence naming the offending field (safe to echo: ASCII-escaped
            where it quotes client input, so it always encodes as JSON).
        close_code: the WebSocket close code to use, or None to answer with a ``reject``.
        seq: the ``seq`` of the op concerned, when the message was a readable op.
    """

    def __init__(self, code: str, message: str, *, close_code: int | None, seq: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code
        self.seq = seq

    @property
    def is_reject(self) -> bool:
        """True when the error is answered with a ``reject`` frame and the connection stays open."""
        return self.close_code is None

    def __repr__(self) -> str:
        return (
            f"ProtocolError(code={self.code!r}, message={self.message!r}, "
            f"close_code={self.close_code!r}, seq={self.seq!r})"
        )
