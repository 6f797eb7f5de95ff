"""The server-side OT step (`engine.document`) and HTTP replace/revert diffs (`engine.diff`)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.diff import diff_notebooks, text_splice
from engine.document import API_CLIENT, Document, Duplicate, Rejected
from engine.ipynb import export_notebook, import_notebook
from engine.ot.components import apply_op
from engine.ot.model import Notebook, ordered_cells
from engine.ot.text import apply_text


def notebook(*sources: str) -> Notebook:
    return import_notebook(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [
                {"id": f"c{i}", "cell_type": "markdown", "metadata": {}, "source": s}
                for i, s in enumerate(sources)
            ],
        }
    )


def text(cell: str, *ops: Any) -> list[dict[str, Any]]:
    return [{"t": "text", "id": cell, "ops": list(ops)}]


def test_concurrent_ops_are_transformed_and_resubmits_deduped() -> None:
    doc = Document(notebook("abc"), 0, [])
    first = doc.submit(text("c0", 3, "X"), 0, "a", 1, "ua", 1)
    second = doc.submit(text("c0", "Y"), 0, "b", 1, "ub", 2)
    assert not isinstance(first, Duplicate) and not isinstance(second, Duplicate)
    assert (first.v, second.v) == (1, 2)
    assert doc.notebook.cells["c0"].source == "YabcX"
    assert doc.submit(text("c0", "Y"), 0, "b", 1, "ub", 3) == Duplicate(2)
    assert doc.version == 2


@pytest.mark.parametrize(
    ("base", "seq", "op", "code"),
    [
        (5, 2, text("c0", "x"), "bad_base"),
        (0, 3, text("c0", "x"), "bad_seq"),
        (0, 2, text("nope", "x"), "unknown_cell"),
        (0, 2, text("c0", 99, "x"), "text_out_of_range"),
        (0, 2, text("new", "x"), "unknown_cell"),  # created after the op's base
    ],
)
def test_rejects_leave_the_document_unchanged(
    base: int, seq: int, op: list[dict[str, Any]], code: str
) -> None:
    doc = Document(notebook("abc"), 0, [])
    insert = {"t": "cell_insert", "id": "new", "pos": "z", "cell": {"cell_type": "code", "source": ""}}
    doc.submit([insert], 0, "a", 1, "ua", 1)
    before = (doc.notebook, doc.version)
    with pytest.raises(Rejected) as info:
        doc.submit(op, base, "a", seq, "ua", 2)
    assert info.value.code == code
    assert (doc.notebook, doc.version) == before


def test_window_bounds_the_base_and_the_dedupe_table() -> None:
    doc = Document(notebook(""), 0, [], window=3)
    for seq in range(1, 6):
        doc.submit(text("c0", str(seq)), seq - 1, "a", seq, "ua", seq)
    assert doc.oldest_base == 2 and doc.ops_since(1) is None
    assert [r.v for r in doc.ops_since(2) or []] == [3, 4, 5]
    with pytest.raises(Rejected, match="window") as info:
        doc.submit(text("c0", "x"), 1, "b", 1, "ub", 9)
    assert info.value.code == "base_too_old"
    assert doc.submit(text("c0", "5"), 4, "a", 5, "ua", 9) == Duplicate(5)
    with pytest.raises(Rejected) as info:
        doc.submit(text("c0", "1"), 0, "a", 1, "ua", 9)  # committed, but out of the window
    assert info.value.code == "base_too_old"


def test_pipelined_ops_skip_their_authors_own_earlier_ops() -> None:
    doc = Document(notebook("abc"), 0, [])
    doc.submit(text("c0", 3, "1"), 0, "a", 1, "ua", 1)
    doc.submit(text("c0", 4, "2"), 0, "a", 2, "ua", 2)  # made on top of op 1, same base
    assert doc.notebook.cells["c0"].source == "abc12"
    doc.submit(text("c0", "B"), 0, "b", 1, "ub", 3)
    doc.submit(text("c0", 5, "3"), 0, "a", 3, "ua", 4)  # still exact: b's op is transformed in
    assert doc.notebook.cells["c0"].source == "Babc123"


def test_a_pipelined_op_behind_a_raced_op_is_rejected() -> None:
    doc = Document(notebook("abc"), 0, [])
    doc.submit(text("c0", "B"), 0, "b", 1, "ub", 1)
    doc.submit(text("c0", 3, "1"), 0, "a", 1, "ua", 2)
    with pytest.raises(Rejected) as info:
        doc.submit(text("c0", 4, "2"), 0, "a", 2, "ua", 3)
    assert info.value.code == "pipeline_conflict"


def test_the_window_is_rebuilt_from_the_tail() -> None:
    doc = Document(notebook(""), 0, [])
    for seq in range(1, 4):
        doc.submit(text("c0", str(seq)), seq - 1, "a", seq, "ua", seq)
    again = Document(doc.notebook, doc.version, list(doc.history))
    assert again.submit(text("c0", "2"), 1, "a", 2, "ua", 9) == Duplicate(2)
    with pytest.raises(Rejected) as info:
        again.submit(text("c0", "x"), 3, "a", 5, "ua", 9)
    assert info.value.code == "bad_seq"


@given(st.text(max_size=30), st.text(max_size=30))
def test_text_splice_turns_old_into_new(old: str, new: str) -> None:
    assert apply_text(old, text_splice(old, new)) == new


SOURCES = st.lists(st.text(alphabet="ab\n🎉", max_size=6), min_size=0, max_size=5)


@given(SOURCES, SOURCES, st.data())
def test_diff_makes_head_equal_the_target(old: list[str], new: list[str], data: st.DataObject) -> None:
    head = notebook(*old)
    target_cells = [
        {
            "id": f"c{i}" if data.draw(st.booleans()) else f"n{i}",
            "cell_type": "markdown",
            "metadata": {},
            "source": s,
        }
        for i, s in enumerate(new)
    ]
    ids = [c["id"] for c in target_cells]
    if len(set(ids)) != len(ids):
        return
    target = import_notebook(
        {"nbformat": 4, "nbformat_minor": 5, "metadata": {"k": 1}, "cells": target_cells}
    )
    op = diff_notebooks(head, target)
    result = apply_op(head, op, 1) if op else head
    assert export_notebook(result) == export_notebook(target)
    assert [c.id for c in ordered_cells(result)] == ids


def test_diff_is_empty_when_nothing_changed_and_is_an_ordinary_commit() -> None:
    head = notebook("a", "b")
    assert diff_notebooks(head, head) == []
    doc = Document(head, 0, [])
    record = doc.commit_local(diff_notebooks(head, notebook("a", "c")), API_CLIENT, "api", 1)
    assert record.v == 1 and doc.notebook.cells["c1"].source == "c"


# -- client ids belong to one user; the tables are bounded by the window ------------------------


def test_a_client_id_belongs_to_the_user_who_used_it_first() -> None:
    doc = Document(notebook(""), 0, [])
    a1 = doc.submit(text("c0", "A1|"), 0, "shared", 1, "alice", 1)
    assert not isinstance(a1, Duplicate)
    with pytest.raises(Rejected) as info:  # bob borrows alice's client id: refused, not committed
        doc.submit(text("c0", "B2|"), 1, "shared", 2, "bob", 2)
    assert info.value.code == "client_taken"
    a2 = doc.submit(text("c0", 3, "A2|"), 1, "shared", 2, "alice", 3)
    assert not isinstance(a2, Duplicate) and a2.v == 2  # applied, never a stolen ack
    assert doc.notebook.cells["c0"].source == "A1|A2|"
    # The ownership is rebuilt from the retained tail after a restart.
    again = Document(doc.notebook, doc.version, list(doc.history))
    assert again.owner("shared") == "alice"
    with pytest.raises(Rejected):
        again.submit(text("c0", "B"), 2, "shared", 3, "bob", 4)


def test_server_clients_are_deduped_per_user() -> None:
    doc = Document(notebook(""), 0, [])
    doc.commit_local(text("c0", "k"), "~kernel", "alice", 1)
    doc.commit_local(text("c0", "k"), "~kernel", "bob", 2)
    assert doc.next_seq("~kernel", "alice") == 2 and doc.next_seq("~kernel", "bob") == 2
    assert doc.owner("~kernel") is None


def test_dedupe_tables_stay_bounded_by_the_window() -> None:
    import tracemalloc

    window = 1000
    doc = Document(notebook(""), 0, [], window=window)
    op = [{"t": "meta_set", "id": None, "key": "k", "value": 1}]

    def connections(start: int, stop: int) -> None:
        for i in range(start, stop):  # one fresh client id per connection, one op each
            doc.submit(op, doc.version, f"client{i}", 1, f"user{i % 50}", i)

    connections(0, 20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        connections(20_000, 100_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"memory grew by {grown} bytes over 80,000 client ids"
    assert doc.dedupe_entries <= window
    assert doc.owner("client0") is None and doc.owner("client99999") == "user49"
    # A resubmit of an op that left the window is refused, never applied twice.
    with pytest.raises(Rejected) as info:
        doc.submit(op, 5, "client5", 1, "user5", 1)
    assert info.value.code == "base_too_old"
