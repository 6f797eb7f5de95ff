"""Fractional position keys: strings over `0-9A-Za-z`, ordered bytewise (contract §5, §8).

A key `k1k2…kn` is read as the base-62 fraction `0.k1k2…kn` (digit values in alphabet order).
For keys without trailing `"0"`s bytewise order and numeric order agree, and every key this
module generates is of that form, so there is always room between two generated keys. Keys
chosen by clients may end in `"0"`; then there can be no key at all between two of them
(`"1"` < `"10"`, nothing in between), and `key_between` raises `ValueError`: the caller then
reuses a neighbour's key (equal keys are ordered by cell id).

The PyPI package `fractional-indexing` uses the same alphabet but only accepts keys in its own
"integer head + fraction" format (it rejects `"1"` or `"V"`), so it cannot order arbitrary
contract-valid keys; this module is the small self-contained alternative.
"""

from __future__ import annotations

import re

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE = 62
MAX_LEN = 1024
_VALUE = {ch: i for i, ch in enumerate(DIGITS)}
_KEY = re.compile(r"[0-9A-Za-z]{1,1024}", re.ASCII)

__all__ = ["MAX_LEN", "is_valid_key", "key_between", "keys_between"]


def is_valid_key(key: object) -> bool:
    """True if `key` is a valid position: a non-empty str of `[0-9A-Za-z]`, at most 1024 long."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def _check(key: str | None, name: str) -> None:
    if key is not None and not is_valid_key(key):
        raise ValueError(f"{name} is not a valid position key: {key!r}")


def _scaled(key: str, length: int) -> tuple[int, bool]:
    """`key` truncated to `length` digits as an integer, and whether anything non-zero was cut."""
    head = key[:length]
    value = 0
    for ch in head:
        value = value * BASE + _VALUE[ch]
    value *= BASE ** (length - len(head))
    return value, key[length:].strip("0") != ""


def _render(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, d = divmod(value, BASE)
        out.append(DIGITS[d])
    return "".join(reversed(out)).rstrip("0")


class _ZerosOnly(Exception):
    def __init__(self, room: int) -> None:
        self.room = room


def _zeros(a: str | None, b: str | None, n: int, room: int) -> list[str]:
    if room < n:
        raise ValueError(f"no room for {n} key(s) between {a!r} and {b!r}")
    return [(a or "") + "0" * j for j in range(1, n + 1)]


def _plan(a: str | None, b: str | None, n: int) -> tuple[int, int, int]:
    """The shortest digit count L with n free integers strictly between a and b at scale L.

    Returns (L, lo, hi): the free integers are lo+1 … hi-1.
    """
    _check(a, "a")
    _check(b, "b")
    if n < 1:
        raise ValueError("n must be at least 1")
    if a is not None and b is not None and a.encode() >= b.encode():
        raise ValueError(f"need a < b, got {a!r} >= {b!r}")
    longest = max(len(a or ""), len(b or ""))
    if b is not None and b.rstrip("0") == (a or "").rstrip("0"):
        # b is a followed by zeros: numerically equal, only a+"0", a+"00", ... lie between.
        raise _ZerosOnly(len(b) - len(a or "") - 1)
    extra = 1
    while BASE**extra < n + 1:
        extra += 1
    for length in range(1, min(MAX_LEN, longest + extra) + 1):
        lo = _scaled(a, length)[0] if a is not None else 0
        if b is None:
            hi = BASE**length
        else:
            hi, cut = _scaled(b, length)
            hi += cut
        if hi - lo - 1 >= n:
            return length, lo, hi
    raise ValueError(f"no room for {n} key(s) of at most {MAX_LEN} characters between {a!r} and {b!r}")


def key_between(a: str | None, b: str | None) -> str:
    """A short valid key `k` with `a < k < b` bytewise (`None`: open end).

    Between two keys it takes the midpoint at the shortest length that has room; at an open
    end it steps by one digit (appending at the end, or prepending, grows keys by one
    character only every ~60 inserts). The result never ends in `"0"` unless `b` is `a`
    followed by zeros (`"1"`, `"100"` → `"10"`), where nothing else fits. Raises `ValueError` if
    a key is invalid, if `a >= b`, or if no key of at most 1024 characters fits (only possible
    for client-chosen keys with trailing zeros, like `"1"` and `"10"`).
    """
    try:
        length, lo, hi = _plan(a, b, 1)
    except _ZerosOnly as z:
        return _zeros(a, b, 1, z.room)[0]
    if a is None and b is None:
        k = (lo + hi) // 2
    elif b is None:
        k = lo + 1
    elif a is None:
        k = hi - 1
    else:
        k = lo + (hi - lo) // 2
    return _render(k, length)


def keys_between(a: str | None, b: str | None, n: int) -> list[str]:
    """`n` increasing valid keys strictly between `a` and `b`, evenly spread, as short as fits.

    Used to import a notebook: 300 cells between two open ends get 2-character keys. Raises
    `ValueError` like `key_between`, or if `n < 0`; `n == 0` gives `[]`.
    """
    if n == 0:
        _check(a, "a")
        _check(b, "b")
        return []
    try:
        length, lo, hi = _plan(a, b, n)
    except _ZerosOnly as z:
        return _zeros(a, b, n, z.room)
    span = hi - lo
    return [_render(lo + span * i // (n + 1), length) for i in range(1, n + 1)]
