"""Every size, count and identifier shape the protocol enforces, in one place.

`Limits` is a frozen value: the server builds one at start-up (from flags or the defaults) and
passes it to `decode_client` / `validate_op`; nothing in `protocol` reads globals or settings.

The regular expressions are compiled with `\\A…\\Z` so that `match`, `fullmatch` and `search`
all accept exactly the whole string (a plain `$` would also accept a trailing newline).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CELL_ID_RE",
    "CLIENT_ID_RE",
    "DEFAULT_LIMITS",
    "MAX_SAFE_INT",
    "NOTEBOOK_ID_RE",
    "POS_RE",
    "Limits",
]

#: The largest integer a JavaScript client can hold exactly (2**53); every count, offset,
#: version and sequence number on the wire is an int in ``0..MAX_SAFE_INT``.
MAX_SAFE_INT = 2**53

#: Notebook ids (contract §2): chosen by the platform or minted by Agora.
NOTEBOOK_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
#: Client ids (the `client` query parameter and the `client` of every op entry).
CLIENT_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
#: Cell ids, as nbformat 4.5 defines them.
CELL_ID_RE = re.compile(r"\A[a-zA-Z0-9_-]{1,64}\Z")
#: Fractional position keys (contract §8): non-empty, at most 1024 of ``[0-9A-Za-z]``.
POS_RE = re.compile(r"\A[0-9A-Za-z]{1,1024}\Z")


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on what one client message may carry. All fields have contract defaults."""

    #: A WebSocket message larger than this (in UTF-8 bytes) closes the connection with 4413.
    max_message_bytes: int = 1_048_576
    #: Components in one op.
    max_components_per_op: int = 1000
    #: Items (skips, inserts, deletes) in the `ops` list of one `text` component.
    max_text_ops_per_component: int = 10_000
    #: Code points inserted by one `text` component (sum of its inserts).
    max_insert_chars: int = 1_048_576
    #: Length of a `pos` key.
    max_pos_len: int = 1024
    #: Length of a cell id (nbformat allows 64).
    max_id_len: int = 64
    #: Length of a `meta_set` key.
    max_meta_key_len: int = 256
    #: Length of a `display_id` (server components).
    max_display_id_len: int = 256
    #: Cell ids in one `execute` message.
    max_cells_per_execute: int = 10_000
    #: Nesting depth of a free JSON value (metadata, attachments, outputs) inside an op.
    max_json_depth: int = 100


DEFAULT_LIMITS = Limits()
