"""The operational-transform core: pure functions, no I/O.

- `engine.ot.model`: the `Notebook`/`Cell` values and their JSON forms (welcome DOC, state).
- `engine.ot.text`: code-point text splices (ottypes/text-unicode semantics).
- `engine.ot.components`: `apply_op`, `transform_op`, `referenced_cells`, `OpError`.
- `engine.ot.poskeys`: fractional position keys.
"""

from engine.ot.components import OpError, apply_op, referenced_cells, transform_op
from engine.ot.model import (
    Cell,
    Notebook,
    notebook_from_doc,
    notebook_from_state,
    notebook_to_doc,
    notebook_to_state,
)
from engine.ot.poskeys import is_valid_key, key_between, keys_between
from engine.ot.text import apply_text, compose_text, normalize_text, transform_position, transform_text

__all__ = [
    "Cell",
    "Notebook",
    "OpError",
    "apply_op",
    "apply_text",
    "compose_text",
    "is_valid_key",
    "key_between",
    "keys_between",
    "normalize_text",
    "notebook_from_doc",
    "notebook_from_state",
    "notebook_to_doc",
    "notebook_to_state",
    "referenced_cells",
    "transform_op",
    "transform_position",
    "transform_text",
]
