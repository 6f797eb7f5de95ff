"""Fractional position keys: strictly between, evenly spread, short, valid, bytewise ordered."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401
from engine.ot.poskeys import DIGITS, is_valid_key, key_between, keys_between
from tests.hypothesis_profiles import examples

assert list(DIGITS) == sorted(DIGITS)  # the alphabet's order is bytewise ascending
keys = st.text(alphabet=DIGITS, min_size=1, max_size=12)


def lt(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a.encode() < b.encode()


def test_examples() -> None:
    assert key_between(None, None) == "V"
    assert key_between("V", None) == "W"
    assert key_between(None, "V") == "U"
    assert key_between("z", None) == "z1"
    assert key_between(None, "1") == "0z"
    assert key_between("V", "V1") == "V0V"
    assert key_between("1", "100") == "10"  # the only key in between ends in 0
    with pytest.raises(ValueError):
        key_between("1", "10")  # nothing fits between a key and itself + "0"
    with pytest.raises(ValueError):
        key_between(None, "0")
    for a, b in [("b", "a"), ("a", "a"), ("", None), ("a-", None), ("x" * 1025, None)]:
        with pytest.raises(ValueError):
            key_between(a, b)


@settings(max_examples=examples(0.5))
@given(keys | st.none(), keys | st.none())
def test_key_between_is_strictly_between(a: str | None, b: str | None) -> None:
    if a is not None and b is not None and a > b:
        a, b = b, a
    if a is not None and a == b:
        return
    try:
        k = key_between(a, b)
    except ValueError:
        # Only when b is a followed by one zero (or b is all zeros and a is None).
        assert b is not None and b.rstrip("0") == (a or "").rstrip("0") and len(b) - len(a or "") <= 1
        return
    assert is_valid_key(k)
    assert lt(a, k) and lt(k, b)


@settings(max_examples=examples(0.25))
@given(keys | st.none(), keys | st.none(), st.integers(1, 400))
def test_keys_between_increasing_and_between(a: str | None, b: str | None, n: int) -> None:
    if a is not None and b is not None and a >= b:
        return
    try:
        ks = keys_between(a, b, n)
    except ValueError:
        assert b is not None and b.rstrip("0") == (a or "").rstrip("0")
        return
    assert len(ks) == n
    assert all(is_valid_key(k) for k in ks)
    chain = [a, *ks, b]
    assert all(lt(x, y) for x, y in itertools.pairwise(chain))


def test_import_300_cells_keys_are_short_and_even() -> None:
    ks = keys_between(None, None, 300)
    assert len(ks) == 300 and max(len(k) for k in ks) == 2
    assert ks == sorted(ks) and len(set(ks)) == 300
    assert keys_between("V", None, 0) == []


def test_generated_keys_leave_room_forever() -> None:
    # Repeated random inserts between generated keys always find room and stay short-ish;
    # appending at the end grows the key by one character only every ~60 appends.
    rnd = random.Random(5)
    order = keys_between(None, None, 20)
    for _ in range(2000):
        i = rnd.randint(0, len(order))
        a = order[i - 1] if i > 0 else None
        b = order[i] if i < len(order) else None
        k = key_between(a, b)
        assert not k.endswith("0")
        order.insert(i, k)
    assert order == sorted(order, key=str.encode)
    last = "V"
    for _ in range(600):
        last = key_between(last, None)
    assert len(last) <= 12
