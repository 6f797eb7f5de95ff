"""class-starts: `--viewers` viewers join a large notebook within `--join-window` seconds while
`--editors` (the teacher, by default one) type; the metric that matters is `welcome`."""

from __future__ import annotations

from agora_users import EditViewer, TypingEditor
from agora_ws import CONFIG


class Viewer(EditViewer):
    fixed_count = int(CONFIG["viewers"])


class Teacher(TypingEditor):
    fixed_count = int(CONFIG["editors"])
