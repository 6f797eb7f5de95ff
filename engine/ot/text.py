"""Code-point text OT, semantically the same as ottypes/text-unicode.

A splice is a list of components walking the source string from offset 0:

- `int` n > 0: skip n code points,
- `str` (non-empty): insert it here,
- `{"d": n}` with n > 0: delete n code points here.

Offsets are Unicode code points, i.e. Python `str` indexing, so an astral character (emoji,
historic scripts) is one unit and no splice can ever split a UTF-16 surrogate pair. A splice
never needs to skip to the end of the string: anything after its last component is kept.

`transform_text(op, other, op_first=...)` maps to text-unicode's
`transform(op, other, "left" if op_first else "right")`.
"""

from __future__ import annotations

from typing import Any

from engine.ot.errors import OpError

TextComponent = int | str | dict[str, Any]
TextOp = list[TextComponent]

__all__ = [
    "TextComponent",
    "TextOp",
    "apply_text",
    "compose_text",
    "has_surrogate",
    "normalize_text",
    "text_delta_length",
    "transform_position",
    "transform_text",
]


def _del_len(c: dict[str, Any]) -> int:
    n = c.get("d")
    if type(n) is not int or n <= 0:
        raise OpError("invalid_op", f"a delete must be {{'d': n}} with n > 0, got {c!r}")
    return n


def has_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate (the codec scans in C, ~10x faster than a regex)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad(c: object) -> OpError:
    return OpError("invalid_op", f"invalid text component {c!r}")


def apply_text(source: str, ops: TextOp) -> str:
    """Return `source` with the splice applied; `source` itself is (of course) unchanged.

    Raises `OpError("text_out_of_range")` if a skip or a delete runs past the end of `source`,
    and `OpError("invalid_op")` for a malformed component or an insert holding a lone surrogate
    (a valid Python `str` can hold one; a valid document never does).
    """
    out: list[str] = []
    pos = 0
    n = len(source)
    for c in ops:
        if type(c) is int:
            if c < 0:
                raise _bad(c)
            end = pos + c
            if end > n:
                raise OpError("text_out_of_range", f"skip to {end} past the end of a {n}-code-point source")
            out.append(source[pos:end])
            pos = end
        elif type(c) is str:
            if not c.isascii() and has_surrogate(c):
                raise OpError("invalid_op", "an insert must not contain lone surrogates")
            out.append(c)
        elif isinstance(c, dict):
            end = pos + _del_len(c)
            if end > n:
                raise OpError(
                    "text_out_of_range", f"delete up to {end} past the end of a {n}-code-point source"
                )
            pos = end
        else:
            raise _bad(c)
    if pos == 0 and not out:
        return source
    out.append(source[pos:])
    return "".join(out)


class _Builder:
    """Appends components, merging neighbours of one kind and dropping empty ones."""

    __slots__ = ("op",)

    def __init__(self) -> None:
        self.op: TextOp = []

    def append(self, c: TextComponent) -> None:
        op = self.op
        if type(c) is int:
            if c == 0:
                return
            if op and type(op[-1]) is int:
                op[-1] += c
                return
            op.append(c)
        elif type(c) is str:
            if not c:
                return
            if op and type(op[-1]) is str:
                op[-1] += c
                return
            op.append(c)
        else:
            assert isinstance(c, dict)
            d = c["d"]
            if d == 0:
                return
            last = op[-1] if op else None
            if isinstance(last, dict):
                op[-1] = {"d": last["d"] + d}
                return
            op.append({"d": d})

    def result(self) -> TextOp:
        op = self.op
        if op and type(op[-1]) is int:
            op.pop()
        return op


def normalize_text(ops: TextOp) -> TextOp:
    """Return the canonical form of a splice: no zero skips, empty inserts or `{"d": 0}`,
    neighbours of one kind merged, no trailing skip. Raises `OpError("invalid_op")` on a
    negative count or a component of the wrong type. The input is not modified."""
    b = _Builder()
    for c in ops:
        if type(c) is int:
            if c < 0:
                raise _bad(c)
            b.append(c)
        elif type(c) is str:
            b.append(c)
        elif isinstance(c, dict):
            d = c.get("d")
            if type(d) is not int or d < 0:
                raise _bad(c)
            b.append({"d": d})
        else:
            raise _bad(c)
    return b.result()


class _Taker:
    """Reads a splice piecewise (text-unicode's `makeTake`), in code points."""

    __slots__ = ("idx", "offset", "op")

    def __init__(self, op: TextOp) -> None:
        self.op = op
        self.idx = 0
        self.offset = 0

    def peek(self) -> TextComponent | None:
        return self.op[self.idx] if self.idx < len(self.op) else None

    def take(self, n: int, indivisible: str | None = None) -> TextComponent | None:
        """Take up to `n` units (-1: the whole next component); past the end: skip `n`.

        `indivisible="i"` never splits an insert, `"d"` never splits a delete.
        """
        if self.idx == len(self.op):
            return None if n == -1 else n
        c = self.op[self.idx]
        off = self.offset
        if type(c) is int:
            if n == -1 or c - off <= n:
                self.idx += 1
                self.offset = 0
                return c - off
            self.offset += n
            return n
        if type(c) is str:
            if n == -1 or indivisible == "i" or len(c) - off <= n:
                self.idx += 1
                self.offset = 0
                return c[off:]
            self.offset += n
            return c[off : off + n]
        assert isinstance(c, dict)
        d: int = c["d"]
        if n == -1 or indivisible == "d" or d - off <= n:
            self.idx += 1
            self.offset = 0
            return {"d": d - off}
        self.offset += n
        return {"d": n}


def _length(c: TextComponent) -> int:
    if type(c) is int:
        return c
    if type(c) is str:
        return len(c)
    assert isinstance(c, dict)
    d: int = c["d"]
    return d


def transform_text(ops: TextOp, other: TextOp, *, op_first: bool) -> TextOp:
    """Transform splice `ops` past `other` (both made on the same string).

    The result applies after `other` and preserves the intent of `ops`; together with
    `transform_text(other, ops, op_first=not op_first)` it satisfies TP1. At a tie (both insert
    at one position) the insert of the op ordered first in the final server order stays left:
    `op_first=True` puts the insert of `ops` before the insert of `other`. Text that `other`
    deleted is not deleted twice; an insert inside a range `other` deleted survives at the
    range's start. Inputs must be normalised; the result is normalised. Same results as
    text-unicode `transform(ops, other, "left" if op_first else "right")`.
    """
    b = _Builder()
    take = _Taker(ops)
    for c2 in other:
        if type(c2) is int:
            length = c2
            while length > 0:
                c1 = take.take(length, "i")
                assert c1 is not None
                b.append(c1)
                if type(c1) is not str:
                    length -= _length(c1)
        elif type(c2) is str:
            if op_first and type(take.peek()) is str:
                c1 = take.take(-1)
                assert c1 is not None
                b.append(c1)
            b.append(len(c2))
        else:
            assert isinstance(c2, dict)
            length = c2["d"]
            while length > 0:
                c1 = take.take(length, "i")
                assert c1 is not None
                if type(c1) is int:
                    length -= c1
                elif type(c1) is str:
                    b.append(c1)
                else:
                    assert isinstance(c1, dict)
                    length -= c1["d"]
    while (c := take.take(-1)) is not None:
        b.append(c)
    return b.result()


def compose_text(a: TextOp, b: TextOp) -> TextOp:
    """One splice equivalent to applying `a` then `b` (normalised inputs, normalised result).

    For viewers and tests only: the server never composes ops before transforming them.
    """
    out = _Builder()
    take = _Taker(a)
    for c in b:
        if type(c) is int:
            length = c
            while length > 0:
                chunk = take.take(length, "d")
                assert chunk is not None
                out.append(chunk)
                if not isinstance(chunk, dict):
                    length -= _length(chunk)
        elif type(c) is str:
            out.append(c)
        else:
            assert isinstance(c, dict)
            length = c["d"]
            offset = 0
            while offset < length:
                chunk = take.take(length - offset, "d")
                assert chunk is not None
                if type(chunk) is int:
                    out.append({"d": chunk})
                    offset += chunk
                elif type(chunk) is str:
                    offset += len(chunk)
                else:
                    out.append(chunk)
    while (rest := take.take(-1)) is not None:
        out.append(rest)
    return out.result()


def transform_position(pos: int, ops: TextOp, *, stick_right: bool = False) -> int:
    """Map a cursor offset `pos` (code points) through the splice `ops`.

    A cursor inside a deleted range moves to the range's start. An insert exactly at the
    cursor leaves the cursor before it (text-unicode's behaviour) unless `stick_right`, which
    moves it after the insert (what the author's own caret wants).
    """
    cur = 0  # offset in the string before the splice
    shift = 0
    for c in ops:
        if type(c) is int:
            cur += c
            if cur > pos:
                break
        elif type(c) is str:
            if cur < pos or (cur == pos and stick_right):
                shift += len(c)
            else:
                break
        else:
            assert isinstance(c, dict)
            if cur >= pos:
                break
            d: int = c["d"]
            shift -= min(d, pos - cur)
            cur += d
    return pos + shift


def text_delta_length(ops: TextOp) -> int:
    """How much a splice changes the length of the string it applies to."""
    delta = 0
    for c in ops:
        if type(c) is str:
            delta += len(c)
        elif isinstance(c, dict):
            delta -= int(c["d"])
    return delta
