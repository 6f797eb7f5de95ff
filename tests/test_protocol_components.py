"""validate_op / validate_cursor: accepted shapes and normalisation."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import Limits, ProtocolError, validate_cursor, validate_op


def text(*ops: Any) -> list[dict[str, Any]]:
    return [{"t": "text", "id": "c1", "ops": list(ops)}]


def norm(*ops: Any) -> list[Any]:
    result: list[Any] = validate_op(text(*ops))[0]["ops"]
    return result


@pytest.mark.parametrize(
    "raw, expected",
    [
        ([3, "x"], [3, "x"]),
        ([0, "x"], ["x"]),  # zero skip dropped
        (["", 2, ""], []),  # empty inserts dropped, trailing skip dropped
        ([1, 2, "a", "b", {"d": 1}, {"d": 2}], [3, "ab", {"d": 3}]),  # neighbours merged
        ([1, 0, 2, "", 3, {"d": 1}], [6, {"d": 1}]),  # merge across dropped items
        (["a", 0, "b"], ["ab"]),
        ([{"d": 1}, 5, 0], [{"d": 1}]),  # trailing skips dropped
        ([5], []),
        ([], []),
        (["x", {"d": 2}, "y"], ["x", {"d": 2}, "y"]),  # kinds kept in order
        (["\U0001f600"], ["\U0001f600"]),
    ],
)
def test_text_normalisation(raw: list[Any], expected: list[Any]) -> None:
    assert norm(*raw) == expected
    assert norm(*expected) == expected  # idempotent


def test_skip_sum_past_two_pow_53_is_rejected() -> None:
    with pytest.raises(ProtocolError) as info:
        norm(2**53, 1)
    assert info.value.code == "invalid_op"


def test_insert_chars_are_bounded() -> None:
    limits = Limits(max_insert_chars=4)
    assert validate_op(text("ab", 1, "cd"), limits=limits)[0]["ops"] == ["ab", 1, "cd"]
    with pytest.raises(ProtocolError) as info:
        validate_op(text("ab", 1, "cde"), limits=limits)
    assert info.value.code == "op_too_large"


def test_every_user_component_is_accepted_and_canonical() -> None:
    op: list[dict[str, Any]] = [
        {
            "cell": {"source": "x = 1", "cell_type": "code", "metadata": {"tags": ["a"]}},
            "pos": "V",
            "id": "n1",
            "t": "cell_insert",
        },
        {
            "t": "cell_insert",
            "id": "n2",
            "pos": "W0",
            "cell": {"cell_type": "markdown", "source": "", "attachments": {"a.png": {"image/png": "AA=="}}},
        },
        {"id": "n1", "t": "cell_delete"},
        {"t": "cell_restore", "id": "n1"},
        {"t": "cell_move", "id": "n1", "pos": "0"},
        {"t": "text", "id": "n1", "ops": [5, "2"]},
        {"value": "raw", "t": "cell_type", "id": "n1"},
        {
            "t": "meta_set",
            "id": None,
            "key": "kernelspec",
            "value": {"name": "python3", "n": [1, 2.5, None, True]},
        },
        {"t": "meta_set", "id": "n1", "key": "collapsed", "value": None},
        {"t": "outputs_clear", "id": "n1"},
    ]
    out = validate_op(op)
    assert out == [dict(c) for c in op]  # same content (the splice is already normal)
    assert list(out[0]) == ["t", "id", "pos", "cell"]  # canonical key order
    assert list(out[0]["cell"]) == ["cell_type", "source", "metadata"]
    assert list(out[6]) == ["t", "id", "value"]
    for a, b in zip(out, op, strict=True):
        assert a is not b
    assert out[0]["cell"]["metadata"] is not op[0]["cell"]["metadata"]  # deep copy of free JSON
    assert validate_op(out) == out


def test_server_components_need_allow_server() -> None:
    op = [
        {
            "t": "outputs_append",
            "id": "c",
            "output": {"output_type": "display_data", "data": {}},
            "display_id": "d1",
        },
        {
            "t": "outputs_append",
            "id": "c",
            "output": {"output_type": "stream", "name": "stdout", "text": "x"},
        },
        {"t": "stream_append", "id": "c", "name": "stderr", "text": ""},
        {"t": "display_update", "display_id": "d1", "output": {"data": {"text/plain": "2"}, "metadata": {}}},
        {"t": "exec_count", "id": "c", "n": None},
        {"t": "exec_count", "id": "c", "n": 12},
        {"t": "exec_state", "id": "c", "state": "aborted"},
    ]
    assert validate_op(op, allow_server=True) == op
    for comp in op:
        with pytest.raises(ProtocolError) as info:
            validate_op([comp])
        assert (info.value.code, info.value.close_code) == ("server_component", None)


@pytest.mark.parametrize(
    "comp",
    [
        {"t": "outputs_append", "id": "c", "output": []},
        {"t": "outputs_append", "id": "c", "output": {}, "display_id": ""},
        {"t": "stream_append", "id": "c", "name": "stdin", "text": "x"},
        {"t": "stream_append", "id": "c", "name": "stdout", "text": 3},
        {"t": "display_update", "display_id": 1, "output": {}},
        {"t": "exec_count", "id": "c", "n": -1},
        {"t": "exec_count", "id": "c", "n": True},
        {"t": "exec_state", "id": "c", "state": "idle"},
        {"t": "exec_state", "id": "c"},
    ],
)
def test_bad_server_components(comp: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_op([comp], allow_server=True)
    assert (info.value.code, info.value.close_code, info.value.seq) == ("invalid_op", None, None)


@pytest.mark.parametrize(
    "comp",
    [
        {"t": "cell_insert", "id": "n", "pos": "a", "cell": {"cell_type": "heading", "source": ""}},
        {"t": "cell_insert", "id": "n", "pos": "a", "cell": {"cell_type": "code"}},
        {"t": "cell_insert", "id": "n", "pos": "a", "cell": {"cell_type": "code", "source": ["a", "b"]}},
        {
            "t": "cell_insert",
            "id": "n",
            "pos": "a",
            "cell": {"cell_type": "code", "source": "", "metadata": []},
        },
        {
            "t": "cell_insert",
            "id": "n",
            "pos": "a",
            "cell": {"cell_type": "code", "source": "", "attachments": {}},
        },
        {"t": "cell_insert", "id": "n", "pos": "a", "cell": "code"},
        {"t": "cell_insert", "id": "n", "cell": {"cell_type": "code", "source": ""}},
        {"t": "cell_type", "id": "n", "value": "Code"},
        {"t": "meta_set", "id": None, "key": "", "value": 1},
        {"t": "meta_set", "id": None, "key": "k" * 257, "value": 1},
        {"t": "meta_set", "id": None, "key": 1, "value": 1},
        {"t": "meta_set", "id": None, "key": "k", "value": float("nan")},
        {"t": "meta_set", "id": None, "key": "k", "value": {1: "non-str key"}},
        {"t": "meta_set", "id": None, "key": "k", "value": 2**64},
        {"t": "meta_set", "id": None, "key": "k", "value": {"a": {1, 2}}},
        {"t": "meta_set", "id": None, "key": "k"},
        {"t": "text", "id": "c1"},
    ],
)
def test_bad_user_components(comp: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_op([comp])
    assert (info.value.code, info.value.close_code) == ("invalid_op", None)


def test_nesting_depth_is_bounded() -> None:
    deep: Any = 1
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ProtocolError) as info:
        validate_op([{"t": "meta_set", "id": None, "key": "k", "value": deep}])
    assert info.value.code == "invalid_op" and "deeper" in info.value.message


def test_not_a_list() -> None:
    bad: list[Any] = [None, {}, "op", ({"t": "cell_delete", "id": "a"},)]
    for raw in bad:
        with pytest.raises(ProtocolError) as info:
            validate_op(raw)
        assert info.value.code == "invalid_op"


def test_lone_surrogates_from_python_objects() -> None:
    for op in (
        text("\ud800"),
        [{"t": "meta_set", "id": None, "key": "\udfff", "value": 1}],
        [{"t": "meta_set", "id": None, "key": "k", "value": {"\ud800": 1}}],
    ):
        with pytest.raises(ProtocolError) as info:
            validate_op(op)
        assert info.value.code == "lone_surrogate"
        info.value.message.encode("utf-8")


def test_validate_cursor() -> None:
    assert validate_cursor(None) is None
    raw = {"head": 2, "anchor": 1, "cell": "c1"}
    out = validate_cursor(raw)
    assert out == raw and out is not raw and list(out) == ["cell", "anchor", "head"]
    with pytest.raises(ProtocolError) as info:
        validate_cursor({"cell": "c1", "anchor": 1, "head": -1})
    assert (info.value.code, info.value.close_code) == ("invalid_field", 4400)
    assert info.value.message.startswith("cursor.head")
