"""Terminal semantics for stream text: `\\r` returns to the start of the line, `\\b` erases.

Kernel output is committed in pieces (stream_append), so a piece may have to rewrite text that
was committed earlier; it cannot, so such a piece keeps one `\\r` (or leading `\\b`s) for
renderers to apply, exactly as Jupyter front ends render raw stream text. Everything a piece
can resolve on its own is resolved, so a progress bar that redraws a thousand times between two
commits costs one redraw. `render` resolves a whole text (what a terminal would show).
"""

from __future__ import annotations

import re

_BACKSPACE = re.compile(r"[^\n\r\x08]\x08")
_RETURN_NEWLINE = re.compile(r"\r+\n")


def _erase(text: str) -> str:
    """Apply every `\\b` that has a character before it on its line (erasing semantics)."""
    while "\x08" in text:
        reduced = _BACKSPACE.sub("", text)
        if reduced == text:
            break
        text = reduced
    return text


def _overwrite(under: str, over: str) -> str:
    return over + under[len(over) :]


def _line(line: str, continuation: bool) -> str:
    """One line (no `\\n`) with its `\\r`s resolved; `continuation` keeps what reaches back."""
    if "\r" not in line:
        return line
    head, *redraws = line.split("\r")
    pending_return = redraws[-1] == ""  # the cursor sits at column 0: the next text overwrites
    drawn = ""
    for segment in redraws:
        drawn = _overwrite(drawn, segment)
    tail = "\r" if pending_return else ""
    if continuation:  # `head` continues a committed line that `drawn` must still overwrite
        return head + "\r" + drawn + tail if drawn else head + "\r"
    return _overwrite(head, drawn) + tail


def reduce_piece(text: str, *, continuation: bool) -> str:
    """Resolve `\\r` and `\\b` inside `text`, which is appended after earlier committed text
    when `continuation` is True (its first line then keeps what must reach back).

    Promises: rendering ``committed + reduce_piece(text)`` equals rendering ``committed + text``
    for the `\\r`-overwrite and `\\b`-erase semantics of `render`.
    """
    if "\r" not in text and "\x08" not in text:
        return text
    lines = _erase(_RETURN_NEWLINE.sub("\n", text)).split("\n")  # "\r\n": the line stays as drawn
    return "\n".join([_line(lines[0], continuation), *(_line(line, False) for line in lines[1:])])


def render(text: str) -> str:
    """What a terminal shows for `text` (`\\r` overwrites from column 0, `\\b` erases); a
    trailing `\\r` is kept as the cursor position."""
    return reduce_piece(text, continuation=False)
