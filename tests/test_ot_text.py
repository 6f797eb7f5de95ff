"""Code-point text OT: apply against a naive model, the ottypes vectors, TP1, compose, cursors, Unicode."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401
from engine.ot.errors import OpError
from engine.ot.text import (
    TextOp,
    apply_text,
    compose_text,
    normalize_text,
    text_delta_length,
    transform_position,
    transform_text,
)
from tests.hypothesis_profiles import examples
from tests.test_ot_helpers import PIECES, rand_splice, rand_text

# Hypothesis draws a seed; the generators are plain `random` (3x cheaper per example than
# st.randoms(), which keeps the ci profile's 2000 examples within the time budget).
seeds = st.integers(0, 2**32 - 1)


def setup(seed: int) -> tuple[str, random.Random]:
    rnd = random.Random(seed)
    return "".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 8))), rnd


VECTORS = Path(__file__).parent / "data" / "ottypes" / "text-transform-tests.txt"


# ------------------------------------------------------------------------ independent references


def naive_apply(source: str, ops: TextOp) -> str:
    """Reference: a list of code points edited one unit at a time."""
    chars = list(source)
    out: list[str] = []
    i = 0
    for c in ops:
        if isinstance(c, int):
            assert i + c <= len(chars)
            out.extend(chars[i : i + c])
            i += c
        elif isinstance(c, str):
            out.extend(c)
        else:
            assert i + c["d"] <= len(chars)
            i += c["d"]
    out.extend(chars[i:])
    return "".join(out)


def gaps(source: str, ops: TextOp) -> tuple[dict[int, str], set[int]]:
    """The splice as (text inserted in each gap of `source`, positions of deleted characters)."""
    ins: dict[int, str] = {}
    dels: set[int] = set()
    pos = 0
    for c in ops:
        if isinstance(c, int):
            pos += c
        elif isinstance(c, str):
            ins[pos] = ins.get(pos, "") + c
        else:
            dels.update(range(pos, pos + c["d"]))
            pos += c["d"]
    return ins, dels


def merged(source: str, first: TextOp, second: TextOp) -> str:
    """What both concurrent splices together must give: in each gap the insert of the op ordered
    first comes first, then the original character unless either op deleted it."""
    i1, d1 = gaps(source, first)
    i2, d2 = gaps(source, second)
    out = []
    for g in range(len(source) + 1):
        out.append(i1.get(g, "") + i2.get(g, ""))
        if g < len(source) and g not in d1 and g not in d2:
            out.append(source[g])
    return "".join(out)


# --------------------------------------------------------------------------------------- apply


@settings(max_examples=examples(0.5))
@given(seeds)
def test_apply_matches_naive_model(seed: int) -> None:
    source, rnd = setup(seed)
    ops = rand_splice(rnd, source)
    result = apply_text(source, ops)
    assert result == naive_apply(source, ops)
    assert len(result) == len(source) + text_delta_length(ops)


@pytest.mark.parametrize(
    ("source", "ops"),
    [("abc", [4]), ("abc", [{"d": 4}]), ("abc", [2, {"d": 2}]), ("", [1]), ("👍", [1, {"d": 1}])],
)
def test_apply_past_the_end_is_text_out_of_range(source: str, ops: TextOp) -> None:
    with pytest.raises(OpError) as e:
        apply_text(source, ops)
    assert e.value.code == "text_out_of_range"


@pytest.mark.parametrize("ops", [[-1], [{"d": 0}], [{"d": -2}], [None], [1.5], [{"x": 1}]])
def test_apply_malformed_is_invalid_op(ops: Any) -> None:
    with pytest.raises(OpError) as e:
        apply_text("abc", ops)
    assert e.value.code == "invalid_op"


def test_apply_basic_and_does_not_touch_rest() -> None:
    assert apply_text("hello", [1, {"d": 2}, "XY"]) == "hXYlo"
    assert apply_text("hello", []) == "hello"
    assert apply_text("", ["👩\u200d💻"]) == "👩\u200d💻"


# ------------------------------------------------------------------------------------ normalize


def test_normalize_like_text_unicode() -> None:
    # The cases of ottypes/text-unicode test/text.js "should normalize sanely".
    cases: list[tuple[Any, Any]] = [
        ([0], []),
        ([""], []),
        ([{"d": 0}], []),
        ([{"d": 2}], [{"d": 2}]),
        ([1, 1], []),
        ([2, 0], []),
        ([1, 1, "hi"], [2, "hi"]),
        ([{"d": 1}, {"d": 1}, "hi"], [{"d": 2}, "hi"]),
        (["a", 100], ["a"]),
        (["a", "b"], ["ab"]),
        (["ab", ""], ["ab"]),
        ([0, "a", 0, "b", 0], ["ab"]),
        (["a", 1, "b"], ["a", 1, "b"]),
    ]
    for ops, expected in cases:
        assert normalize_text(ops) == expected


def test_normalize_rejects_negative_counts() -> None:
    for bad in ([-1], [{"d": -1}], [True], [{"d": "abc"}]):
        with pytest.raises(OpError):
            normalize_text(bad)


# ----------------------------------------------------------------------- transform: the vectors


def load_vectors() -> list[tuple[TextOp, TextOp, str, TextOp]]:
    lines = [ln for ln in VECTORS.read_text(encoding="utf-8").split("\n") if not ln.startswith("#")]

    def read(line: str) -> TextOp:
        op: list[Any] = []
        for c in json.loads(line):
            if isinstance(c, int):
                op.append(c)
            elif "i" in c:
                op.append(c["i"])
            else:
                op.append({"d": len(c["d"])})  # the file carries deleted text; we carry counts
        return normalize_text(op)

    out = []
    while len(lines) >= 4:
        op, other, side, expected = lines[:4]
        del lines[:4]
        out.append((read(op), read(other), side, read(expected)))
    return out


VECTOR_CASES = load_vectors()


def test_vectors_loaded() -> None:
    assert len(VECTOR_CASES) == 46
    assert {side for _, _, side, _ in VECTOR_CASES} == {"left", "right"}


@pytest.mark.parametrize(("op", "other", "side", "expected"), VECTOR_CASES)
def test_ottypes_transform_vectors(op: TextOp, other: TextOp, side: str, expected: TextOp) -> None:
    # Mapping: text-unicode's side "left" means op's insert goes left of other's insert at a tie,
    # i.e. op is ordered first: our op_first=True; "right" is op_first=False. The vectors are
    # ASCII, so code points and UTF-16 units agree; they read deletes as {"d": text} and we turn
    # them into counts, as text-unicode's own test does. No difference otherwise: every vector
    # passes unchanged.
    assert transform_text(op, other, op_first=(side == "left")) == expected
    # And TP1 with the expected result, on a document long enough for both ops.
    length = max(
        sum(c if isinstance(c, int) else c["d"] for c in o if not isinstance(c, str)) for o in (op, other)
    )
    source = "".join(chr(0x61 + i % 26) for i in range(length))
    f = side == "left"
    a = apply_text(apply_text(source, other), expected)
    b = apply_text(apply_text(source, op), transform_text(other, op, op_first=not f))
    assert a == b


def test_emoji_transform_vector() -> None:
    # ottypes/text-unicode test/text.js: transform(['👻'], ['🥰'], left) == ['👻'], right == [1, '👻']
    assert transform_text(["👻"], ["🥰"], op_first=True) == ["👻"]
    assert transform_text(["👻"], ["🥰"], op_first=False) == [1, "👻"]


# ------------------------------------------------------------------------ transform: properties


@settings(max_examples=examples(1.0))
@given(seeds, st.booleans())
def test_tp1_and_merge_semantics(seed: int, op_first: bool) -> None:
    source, rnd = setup(seed)
    a = rand_splice(rnd, source)
    b = rand_splice(rnd, source)
    a2 = transform_text(a, b, op_first=op_first)
    b2 = transform_text(b, a, op_first=not op_first)
    left = apply_text(apply_text(source, b), a2)
    right = apply_text(apply_text(source, a), b2)
    assert left == right
    # Independent check of the result: inserts kept in place, deletes unioned, tie rule.
    assert left == (merged(source, a, b) if op_first else merged(source, b, a))
    assert normalize_text(a2) == a2 and normalize_text(b2) == b2


def test_tie_rule_first_ordered_insert_stays_left() -> None:
    # Server case: other committed first, op arrives later -> op's insert goes right.
    assert (
        apply_text(apply_text("ab", [1, "X"]), transform_text([1, "Y"], [1, "X"], op_first=False)) == "aXYb"
    )
    assert apply_text(apply_text("ab", [1, "X"]), transform_text([1, "Y"], [1, "X"], op_first=True)) == "aYXb"


def test_insert_inside_concurrent_delete_survives() -> None:
    source = "abcdef"
    ins = [3, "🙂"]
    dele = [1, {"d": 4}]
    assert apply_text(apply_text(source, dele), transform_text(ins, dele, op_first=False)) == "a🙂f"
    assert apply_text(apply_text(source, ins), transform_text(dele, ins, op_first=True)) == "a🙂f"


def test_overlapping_deletes_delete_once() -> None:
    source = "0123456789"
    a = [2, {"d": 4}]
    b = [4, {"d": 4}]
    assert apply_text(apply_text(source, b), transform_text(a, b, op_first=False)) == "0189"


# -------------------------------------------------------------------------------------- compose


@settings(max_examples=examples(0.5))
@given(seeds)
def test_compose_equals_sequential_apply(seed: int) -> None:
    source, rnd = setup(seed)
    a = rand_splice(rnd, source)
    mid = apply_text(source, a)
    b = rand_splice(rnd, mid)
    c = compose_text(a, b)
    assert apply_text(source, c) == apply_text(mid, b)
    assert normalize_text(c) == c


def test_compose_emoji_vectors() -> None:
    # ottypes/text-unicode test/text.js "emoji" and "fuzzer found bugs".
    assert compose_text(["👻"], [1, "🥰"]) == ["👻🥰"]
    assert compose_text([1, "a👻b"], [2, {"d": 1}]) == [1, "ab"]
    assert compose_text([1, "a👻b"], [3, {"d": 1}]) == [1, "a👻"]
    assert compose_text(["👻🥰💃"], [1, {"d": 1}]) == ["👻💃"]


# -------------------------------------------------------------------------------------- cursors


def test_transform_position_libot_cases() -> None:
    # ottypes/text-unicode test/text.js #transformPosition (copied there from josephg/libot).
    ins: TextOp = [10, "oh hi"]
    dele: TextOp = [25, {"d": 20}]
    op: TextOp = [10, "oh hi", 10, {"d": 20}]
    assert transform_position(10, op) == 10
    assert [transform_position(p, dele) for p in (25, 35, 45, 10, 55)] == [25, 25, 25, 10, 35]
    assert [transform_position(p, op) for p in (0, 100, 11, 20, 30, 40, 41)] == [0, 85, 16, 25, 25, 25, 26]
    assert transform_position(10, ins) == 10
    assert transform_position(10, ins, stick_right=True) == 15
    assert transform_position(1, ["👻🥰💃"]) == 4
    assert transform_position(1, [2, "👻🥰💃"]) == 1


@settings(max_examples=examples(0.25))
@given(seeds)
def test_transform_position_tracks_a_character(seed: int) -> None:
    source, rnd = setup(seed)
    # A cursor just before a character that the splice keeps stays just before it.
    ops = rand_splice(rnd, source)
    _, dels = gaps(source, ops)
    result = apply_text(source, ops)
    for p in range(len(source)):
        if p not in dels:
            # stick_right: the cursor moves past an insert right before the character.
            assert result[transform_position(p, ops, stick_right=True)] == source[p]
    new = transform_position(len(source), ops, stick_right=True)
    assert new == len(result)


# -------------------------------------------------------------------------------------- Unicode


def test_offsets_are_code_points() -> None:
    s = "a👩\u200d💻b"  # 'a', WOMAN, ZWJ, LAPTOP, 'b' = 5 code points (7 UTF-16 units)
    assert len(s) == 5
    assert apply_text(s, [1, {"d": 3}]) == "ab"
    assert apply_text("e\u0301x", [1, {"d": 1}]) == "ex"  # a combining mark is its own code point
    assert apply_text("𝄞", [1, "!"]) == "𝄞!"


def test_no_delete_can_split_a_surrogate_pair() -> None:
    # On a UTF-16 browser, "x😀y" is x, \ud83d, \ude00, y; deleting one unit at UTF-16 offset 1
    # would leave a lone surrogate. In code points the emoji is one unit: every possible delete
    # removes it whole or not at all, and no result ever holds a surrogate code point.
    s = "x😀y𝄞"
    for start in range(len(s) + 1):
        for n in range(1, len(s) - start + 1):
            out = apply_text(s, normalize_text([start, {"d": n}]))
            assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in out)
            assert out == s[:start] + s[start + n :]


@settings(max_examples=examples(0.25))
@given(seeds)
def test_results_never_hold_surrogates(seed: int) -> None:
    source, rnd = setup(seed)
    a = rand_splice(rnd, source)
    b = rand_splice(rnd, source)
    out = apply_text(apply_text(source, b), transform_text(a, b, op_first=False))
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in out)


def test_lone_surrogate_insert_is_rejected() -> None:
    with pytest.raises(OpError) as e:
        apply_text("abc", [1, "\ud83d"])
    assert e.value.code == "invalid_op"


def test_random_unicode_texts_have_no_surrogates() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in rand_text(rnd, 10))
