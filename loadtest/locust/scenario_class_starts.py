"""class-starts: `--viewers` viewers join a large notebook within `--join-window` seconds while
`--editors` (the teacher, by default one) type; the metric that matters is `welcome`."""

from __future__ import annotations

from agora_users import EditViewer, TypingEditor
from agora_ws import CONFIG


class Viewer(EditViewer):
    """The class: joins within the join window."""

    fixed_count = int(CONFIG["viewers"])


class Teacher(TypingEditor):
    """The teacher, typing while the class joins."""

    fixed_count = int(CONFIG["editors"])
