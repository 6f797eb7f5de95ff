"""classroom: `--viewers` viewers and `--editors` editors on one notebook.

Editors type at `--rate` ops/s each (one op in flight, a send-time marker in every edit) and
record `ack`; viewers record `edit→viewer` for every edit; everyone records `welcome`.
"""

from __future__ import annotations

from agora_users import EditViewer, TypingEditor
from agora_ws import CONFIG


class Viewer(EditViewer):
    """A student watching."""

    fixed_count = int(CONFIG["viewers"])


class Editor(TypingEditor):
    """A student typing in a cell of their own."""

    fixed_count = int(CONFIG["editors"])
