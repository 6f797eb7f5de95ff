"""Property tests: decode_client never raises anything but ProtocolError; normalisation is
idempotent, meaning-preserving and survives an encode/decode round trip."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    ERROR_CODES,
    ClientMessage,
    OpMessage,
    ProtocolError,
    decode_client,
    encode_client,
    validate_op,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.one_of(st.characters(), surrogates), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
    st.sampled_from(["op", "text", "c1", "a", "code", "ping", "presence", "d", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=25,
)

ID_CHARS = "abcXYZ019_-"
cell_ids = st.text(ID_CHARS, min_size=1, max_size=8)
keys = st.sampled_from(
    ["t", "id", "pos", "cell", "ops", "value", "key", "cell_type", "source", "n", "d", "x"]
)
comp_types = st.sampled_from(
    [
        "cell_insert",
        "cell_delete",
        "cell_restore",
        "cell_move",
        "text",
        "cell_type",
        "meta_set",
        "outputs_clear",
        "stream_append",
        "exec_state",
        "bogus",
    ]
)
component_like = st.one_of(
    json_values,
    st.builds(lambda t, rest: {"t": t, **rest}, comp_types, st.dictionaries(keys, json_values, max_size=4)),
    st.builds(
        lambda t, cid, rest: {"t": t, "id": cid, **rest},
        comp_types,
        cell_ids,
        st.dictionaries(keys, json_values, max_size=3),
    ),
)
message_like = st.one_of(
    json_values,
    st.builds(
        lambda t, rest: {"type": t, **rest},
        st.sampled_from(["op", "presence", "execute", "interrupt", "ping", "nope"]),
        st.dictionaries(
            st.sampled_from(["seq", "base", "op", "cursor", "cells", "x"]), json_values, max_size=4
        ),
    ),
    st.builds(
        lambda seq, base, op: {"type": "op", "seq": seq, "base": base, "op": op},
        st.one_of(st.integers(min_value=-2, max_value=2**54), json_values),
        st.one_of(st.integers(min_value=-2, max_value=2**54), json_values),
        st.lists(component_like, max_size=4),
    ),
)


def check_decode(data: bytes | str) -> ClientMessage | None:
    try:
        return decode_client(data)
    except ProtocolError as err:
        assert err.code in ERROR_CODES
        assert (err.close_code is None) == (err.seq is not None)
        if err.close_code is None:
            assert ERROR_CODES[err.code] is None or err.code == "lone_surrogate"
        err.message.encode("utf-8")  # always encodable in an error frame
        return None


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)


@FUZZ
@given(st.text(st.one_of(st.characters(), surrogates), max_size=100))
def test_arbitrary_text(data: str) -> None:
    check_decode(data)


@FUZZ
@given(message_like, st.booleans())
def test_arbitrary_json(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    msg = check_decode(text if not ascii_only else text.encode())
    if not ascii_only:
        try:
            data = text.encode()
        except UnicodeEncodeError:
            return
        assert type(check_decode(data)) is type(msg)
    if msg is not None:
        # whatever is accepted survives a round trip unchanged
        assert decode_client(encode_client(msg)) == msg


@FUZZ
@given(st.one_of(json_values, st.lists(component_like, max_size=4)), st.booleans())
def test_validate_op_on_arbitrary_values(raw: Any, allow_server: bool) -> None:
    try:
        op = validate_op(raw, allow_server=allow_server)
    except ProtocolError as err:
        assert (err.close_code, err.seq) == (None, None)
        assert ERROR_CODES[err.code] is None or err.code == "lone_surrogate"
        err.message.encode("utf-8")
    else:
        assert validate_op(op, allow_server=allow_server) == op
        orjson.dumps(op)


# Valid ops ---------------------------------------------------------------------------------

positions = st.text("0aZz9V", min_size=1, max_size=6)
small_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
splice_items = st.one_of(
    st.integers(min_value=0, max_value=5),
    st.text(max_size=4),
    st.builds(lambda n: {"d": n}, st.integers(min_value=1, max_value=5)),
)
user_components = st.one_of(
    st.builds(
        lambda i, p, ct, src, meta: {
            "t": "cell_insert",
            "id": i,
            "pos": p,
            "cell": {"cell_type": ct, "source": src, **({"metadata": meta} if meta else {})},
        },
        cell_ids,
        positions,
        st.sampled_from(["code", "markdown", "raw"]),
        st.text(max_size=10),
        st.none() | st.dictionaries(st.text(max_size=4), small_json, max_size=2),
    ),
    st.builds(
        lambda t, i: {"t": t, "id": i},
        st.sampled_from(["cell_delete", "cell_restore", "outputs_clear"]),
        cell_ids,
    ),
    st.builds(lambda i, p: {"t": "cell_move", "id": i, "pos": p}, cell_ids, positions),
    st.builds(
        lambda i, ops: {"t": "text", "id": i, "ops": ops}, cell_ids, st.lists(splice_items, max_size=8)
    ),
    st.builds(
        lambda i, v: {"t": "cell_type", "id": i, "value": v},
        cell_ids,
        st.sampled_from(["code", "markdown", "raw"]),
    ),
    st.builds(
        lambda i, k, v: {"t": "meta_set", "id": i, "key": k, "value": v},
        st.none() | cell_ids,
        st.text(min_size=1, max_size=6),
        small_json,
    ),
)


@FUZZ
@given(st.lists(user_components, min_size=1, max_size=6), st.integers(1, 2**53), st.integers(0, 2**53))
def test_valid_ops_round_trip(op: list[dict[str, Any]], seq: int, base: int) -> None:
    normal = validate_op(op)
    assert validate_op(normal) == normal  # idempotent
    assert orjson.dumps(validate_op(normal)) == orjson.dumps(normal)  # canonical bytes
    msg = decode_client(encode_client(OpMessage(seq, base, op)))
    assert msg == OpMessage(seq, base, normal)
    assert decode_client(json.dumps({"type": "op", "seq": seq, "base": base, "op": op}).encode()) == msg


def apply_splice(doc: str, ops: list[Any]) -> str | None:
    """Reference splice semantics; None when it runs past the end."""
    out, at = [], 0
    for item in ops:
        if isinstance(item, int):
            if at + item > len(doc):
                return None
            out.append(doc[at : at + item])
            at += item
        elif isinstance(item, str):
            out.append(item)
        else:
            if at + item["d"] > len(doc):
                return None
            at += item["d"]
    return "".join(out) + doc[at:]


@FUZZ
@given(st.lists(splice_items, max_size=12), st.text(min_size=0, max_size=30))
def test_splice_normalisation_preserves_meaning(ops: list[Any], doc: str) -> None:
    normal = validate_op([{"t": "text", "id": "c", "ops": ops}])[0]["ops"]
    assert apply_splice(doc, normal) == apply_splice(doc, ops) or apply_splice(doc, ops) is None
    assert 0 not in normal and "" not in normal
    assert not normal or not isinstance(normal[-1], int)
    for a, b in itertools.pairwise(normal):
        assert type(a) is not type(b)
