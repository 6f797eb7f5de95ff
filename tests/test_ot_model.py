"""Model JSON forms: the welcome DOC and the lossless snapshot state, both round-tripping."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401
from engine.ot.components import apply_op
from engine.ot.model import (
    Cell,
    Notebook,
    build_displays,
    notebook_from_doc,
    notebook_from_state,
    notebook_to_doc,
    notebook_to_state,
)
from tests.hypothesis_profiles import examples
from tests.test_ot_helpers import KINDS, rand_notebook, rand_op, state


@settings(max_examples=examples(0.25))
@given(st.integers(0, 2**32 - 1))
def test_state_round_trip_is_lossless(seed: int) -> None:
    rnd = random.Random(seed)
    nb = rand_notebook(rnd)
    nb = apply_op(nb, rand_op(rnd, nb, KINDS, "n"), 7)
    d = json.loads(json.dumps(notebook_to_state(nb)))
    back = notebook_from_state(d)
    assert back == nb
    assert back.displays == nb.displays == build_displays(nb.cells)


@settings(max_examples=examples(0.25))
@given(st.integers(0, 2**32 - 1))
def test_doc_round_trip(seed: int) -> None:
    rnd = random.Random(seed)
    nb = rand_notebook(rnd)
    for cell in nb.cells.values():
        cell.created = 0  # the DOC does not carry `created`
        if cell.cell_type != "code":
            cell.outputs, cell.display_ids, cell.execution_count = [], [], None  # not sent
    nb.displays = build_displays(nb.cells)
    doc = json.loads(json.dumps(notebook_to_doc(nb)))
    back = notebook_from_doc(doc)
    assert state(back) == state(nb)
    assert notebook_to_doc(back) == doc


def test_doc_shape() -> None:
    cells = {
        "b": Cell(id="b", pos="k", cell_type="markdown", source="# hi", deleted=True),
        "a": Cell(id="a", pos="k", cell_type="code", source="1", outputs=[{"output_type": "stream",
                  "name": "stdout", "text": "1"}], display_ids=[None], execution_count=1, exec_state="done"),
        "c": Cell(id="c", pos="V", cell_type="raw", attachments={"f": {}}),
        "d": Cell(id="d", pos="z", cell_type="code", outputs=[{"output_type": "display_data", "data": {},
                  "metadata": {}}], display_ids=["x"]),
    }  # fmt: skip
    nb = Notebook(metadata={"m": 1}, cells=cells, displays=build_displays(cells))
    doc = notebook_to_doc(nb)
    assert list(doc) == ["metadata", "nbformat", "nbformat_minor", "cells"]
    assert (doc["nbformat"], doc["nbformat_minor"], doc["metadata"]) == (4, 5, {"m": 1})
    assert [c["id"] for c in doc["cells"]] == ["c", "a", "b", "d"]  # (pos, id), tombstones included
    c, a, b, d = doc["cells"]
    assert c == {
        "id": "c",
        "pos": "V",
        "cell_type": "raw",
        "source": "",
        "metadata": {},
        "attachments": {"f": {}},
    }
    assert a["outputs"] and a["execution_count"] == 1 and a["exec_state"] == "done" and "display_ids" not in a
    assert b["deleted"] is True and "outputs" not in b and "execution_count" not in b
    assert d["display_ids"] == ["x"] and "deleted" not in d and "exec_state" not in d
    assert notebook_from_doc(doc).displays == {"x": frozenset({"d"})}
