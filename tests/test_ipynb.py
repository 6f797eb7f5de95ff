"""ipynb import/export (engine.ipynb) against the real-world corpus in tests/data/notebooks."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.ipynb import (
    MAX_CELLS,
    InvalidNotebook,
    export_bytes,
    export_notebook,
    import_notebook,
)
from engine.ot.model import Cell, Notebook, ordered_cells

DATA = Path(__file__).parent / "data" / "notebooks"
FILES = sorted(DATA.glob("*.ipynb"))
INVALID_FILE = DATA / "hf_diffusers_training_example_invalid.ipynb"
ID_RE = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
JSON_MIME = re.compile(r"^application/(.*\+)?json$")


def test_corpus_present() -> None:
    assert len(FILES) == 22
    assert (DATA / "SOURCES.md").is_file()


def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node))


def _reference(raw: bytes) -> dict[str, Any]:
    """What nbformat itself reads, plus the normalisations engine.ipynb documents."""
    logging.getLogger("traitlets").disabled = True  # nbformat logs (not raises) for the invalid file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MissingIDFieldWarning for the invalid file
        ref = _plain(nbformat.reads(raw.decode("utf-8"), as_version=4))
    for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):  # transient, as nbformat.writes
        ref["metadata"].pop(key, None)
    for cell in ref["cells"]:
        cell["source"] = cell["source"].replace("\r\n", "\n").replace("\r", "\n")
        cell["metadata"].pop("trusted", None)
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                out.pop("metadata", None)  # the documented Colab repair
                out["text"] = out["text"].replace("\r\n", "\n")
            for mime, value in out.get("data", {}).items():
                if isinstance(value, str) and not JSON_MIME.match(mime):
                    out["data"][mime] = value.replace("\r\n", "\n")
    return ref


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_round_trip_matches_nbformat(path: Path) -> None:
    raw = path.read_bytes()
    original = json.loads(raw)
    nb = import_notebook(raw)
    doc = export_notebook(nb)
    nbformat.validate(nbformat.from_dict(copy.deepcopy(doc)))
    assert (doc["nbformat"], doc["nbformat_minor"]) == (4, 5)

    ref = _reference(raw)
    assert doc["metadata"] == ref["metadata"]
    assert len(doc["cells"]) == len(ref["cells"])
    ids = [c["id"] for c in doc["cells"]]
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.match(i) for i in ids)
    uploaded = original.get("cells", [])  # v3 files have none at the top level
    for index, (got, want) in enumerate(zip(doc["cells"], ref["cells"], strict=True)):
        if index < len(uploaded) and "id" in uploaded[index]:
            assert got["id"] == uploaded[index]["id"]  # uploaded 4.5 ids kept exactly
        got = {k: v for k, v in got.items() if k != "id"}
        want = {k: v for k, v in want.items() if k != "id"}
        assert got == want, f"cell {index} differs"

    # model-side promises
    cells = ordered_cells(nb)
    assert [c.id for c in cells] == ids
    assert all(c.created == 0 and c.exec_state is None and not c.deleted for c in cells)
    assert all(c.display_ids == [None] * len(c.outputs) for c in cells)
    assert [c.pos for c in cells] == sorted(c.pos for c in cells)
    assert len({c.pos for c in cells}) == len(cells)
    assert all("\r" not in c.source for c in cells)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_export_is_deterministic(path: Path) -> None:
    raw = path.read_bytes()
    nb = import_notebook(raw)
    first = export_bytes(nb)
    assert export_bytes(nb) == first
    assert export_bytes(import_notebook(raw)) == first  # minted ids are deterministic too
    assert export_bytes(import_notebook(first)) == first
    assert first.endswith(b"\n")
    # formatted exactly as nbformat writes a file
    assert first.decode() == nbformat.writes(nbformat.reads(first.decode(), as_version=4)) + "\n"


def test_v45_file_with_all_ids_round_trips_byte_identical() -> None:
    raw = (DATA / "hf_sagemaker_deploy_tiny_v45.ipynb").read_bytes()
    assert export_bytes(import_notebook(raw)) == raw


@pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning")
def test_the_invalid_file_is_really_invalid_and_is_repaired() -> None:
    raw = INVALID_FILE.read_bytes()
    original = json.loads(raw)
    with pytest.raises(nbformat.ValidationError, match="'metadata' was unexpected"):
        nbformat.validate(nbformat.from_dict(copy.deepcopy(original)))
    assert "id" not in original["cells"][0]
    assert original["cells"][47]["outputs"][0]["output_type"] == "stream"
    assert "metadata" in original["cells"][47]["outputs"][0]

    nb = import_notebook(raw)
    cells = ordered_cells(nb)
    assert cells[0].id == "cell-0"
    assert [c.id for c in cells[1:]] == [c["id"] for c in original["cells"][1:]]
    assert all("metadata" not in o for c in cells for o in c.outputs if o["output_type"] == "stream")
    nbformat.validate(nbformat.from_dict(export_notebook(nb)))


def test_import_of_the_large_notebook_is_fast() -> None:
    raw = (DATA / "handson_ml3_08_dimensionality_reduction_large.ipynb").read_bytes()
    import_notebook(raw)  # warm the schema cache
    start = time.perf_counter()
    import_notebook(raw)
    assert time.perf_counter() - start < 5.0  # about 0.1 s here; tenfold margin for busy machines


def test_dict_input_is_not_mutated_nor_shared() -> None:
    original = json.loads((DATA / "irkernel_demo.ipynb").read_bytes())
    before = copy.deepcopy(original)
    nb = import_notebook(original)
    assert original == before
    ordered_cells(nb)[0].metadata["x"] = 1
    assert original == before


def _tiny(**extra: Any) -> dict[str, Any]:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title\r\n", "line\rnext"]},
        {
            "cell_type": "code",
            "metadata": {},
            "source": "print(1)\r\n",
            "execution_count": 1,
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["a\r\n", "10%\r20%\r\n"]},
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "metadata": {},
                    "data": {"text/plain": ["x\r\n", "y"], "application/json": {"k": ["a\r\n"]}},
                },
            ],
        },
    ]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4, **extra}


def test_line_endings_and_line_lists() -> None:
    nb = import_notebook(_tiny())
    md, code = ordered_cells(nb)
    assert md.source == "# Title\nline\nnext"
    assert code.source == "print(1)\n"
    assert code.outputs[0]["text"] == "a\n10%\r20%\n"  # lone \r kept in outputs (progress bars)
    assert code.outputs[1]["data"]["text/plain"] == "x\ny"
    assert code.outputs[1]["data"]["application/json"] == {"k": ["a\r\n"]}  # JSON data untouched
    assert [c.id for c in (md, code)] == ["cell-0", "cell-1"]


def test_minted_ids_avoid_uploaded_ones() -> None:
    d = _tiny(nbformat_minor=5)
    d["cells"].append({"cell_type": "raw", "metadata": {}, "source": "", "id": "cell-0"})
    nb = import_notebook(d)
    assert [c.id for c in ordered_cells(nb)] == ["cell-0-1", "cell-1", "cell-0"]


def test_attachments_kept_and_exported() -> None:
    nb = import_notebook((DATA / "paddle_d2l_zh_rcnn_attachments.ipynb").read_bytes())
    with_att = [c for c in ordered_cells(nb) if c.attachments]
    assert with_att
    doc = export_notebook(nb)
    assert sum(1 for c in doc["cells"] if "attachments" in c) == len(with_att)


def _cell(cid: str, pos: str, cell_type: str = "code", **kw: Any) -> Cell:
    return Cell(id=cid, pos=pos, cell_type=cell_type, **kw)


def test_export_order_tombstones_and_types() -> None:
    out = {"output_type": "stream", "name": "stdout", "text": "hi\n"}
    nb = Notebook(
        metadata={"orig_nbformat": 3},
        cells={
            "b": _cell("b", "B", source="2", outputs=[out], display_ids=["d1"], execution_count=3, created=7),
            "a": _cell("a", "A", "markdown", source="1", attachments={"x.png": {"image/png": "AAAA"}}),
            "c": _cell("c", "B", "raw", source="3", outputs=[out]),  # same pos: ordered by id
            "z": _cell("z", "0", source="gone", deleted=True),
            "m": _cell("m", "C", "code", attachments={"x.png": {"image/png": "AAAA"}}, exec_state="running"),
        },
    )
    doc = export_notebook(nb)
    nbformat.validate(nbformat.from_dict(copy.deepcopy(doc)))
    assert [c["id"] for c in doc["cells"]] == ["a", "b", "c", "m"]
    assert doc["metadata"] == {}
    a, b, c, m = doc["cells"]
    assert a == {
        "id": "a",
        "cell_type": "markdown",
        "metadata": {},
        "source": "1",
        "attachments": {"x.png": {"image/png": "AAAA"}},
    }
    assert b == {
        "id": "b",
        "cell_type": "code",
        "metadata": {},
        "source": "2",
        "outputs": [out],
        "execution_count": 3,
    }
    assert c == {"id": "c", "cell_type": "raw", "metadata": {}, "source": "3"}
    assert "attachments" not in m and m["outputs"] == [] and m["execution_count"] is None
    b["outputs"][0]["text"] = "changed"
    assert nb.cells["b"].outputs[0]["text"] == "hi\n"  # export containers are fresh


def test_export_drops_schema_invalid_metadata_keys() -> None:
    nb = import_notebook(_tiny())
    first = ordered_cells(nb)[1]
    nb.cells[first.id] = dataclasses.replace(first, metadata={"tags": "not-a-list", "keep": 1})
    doc = export_notebook(nb)
    nbformat.validate(nbformat.from_dict(copy.deepcopy(doc)))
    assert doc["cells"][1]["metadata"] == {"keep": 1}


def test_empty_notebook() -> None:
    nb = import_notebook({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    assert nb.cells == {}
    doc = export_notebook(Notebook())
    nbformat.validate(nbformat.from_dict(doc))
    assert export_bytes(Notebook()) == export_bytes(Notebook())


def _v45(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _md(cid: str | None = None, **kw: Any) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": "markdown", "metadata": {}, "source": "x", **kw}
    if cid is not None:
        cell["id"] = cid
    return cell


MALFORMED: list[tuple[str, Any, str]] = [
    ("not_json", b"this is not json", "not valid JSON"),
    ("truncated", (DATA / "irkernel_demo.ipynb").read_bytes()[:5000], "not valid JSON"),
    ("not_utf8", b'{"a": "\xff"}', "UTF-8"),
    ("json_list", b"[1, 2, 3]", "JSON object"),
    ("json_string", '"hello"', "JSON object"),
    ("empty_object", {}, "no 'nbformat'"),
    ("missing_cells", {"nbformat": 4, "nbformat_minor": 5, "metadata": {}}, "'cells'"),
    ("cells_not_list", {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}, "'cells'"),
    ("nbformat_5", {"nbformat": 5, "nbformat_minor": 0, "metadata": {}, "cells": []}, "nbformat 5"),
    ("nbformat_string", {"nbformat": "4", "nbformat_minor": 5, "metadata": {}, "cells": []}, "integer"),
    ("no_minor", {"nbformat": 4, "metadata": {}, "cells": []}, "nbformat_minor"),
    ("bad_cell_type", _v45(_md("a", cell_type="heading")), "cell_type 'heading'"),
    ("cell_type_list", _v45(_md("a", cell_type=["x"] * 9)), "cell_type"),
    ("cell_not_object", _v45("text"), "not an object"),
    ("duplicate_ids", _v45(_md("same"), _md("other"), _md("same")), "more than one cell"),
    ("invalid_id_chars", _v45(_md("a b")), "invalid id"),
    ("invalid_id_long", _v45(_md("x" * 65)), "invalid id"),
    ("invalid_id_empty", _v45(_md("")), "invalid id"),
    ("invalid_id_type", _v45(_md(7)), "invalid id"),  # type: ignore[arg-type]
    ("markdown_outputs", _v45(_md("a", outputs=[])), "'outputs' was unexpected"),
    ("source_number", _v45(_md("a", source=5)), "cells[0].source"),
    ("bad_tags", _v45(_md("a", metadata={"tags": "x"})), "tags"),
    ("bad_kernelspec", {**_v45(), "metadata": {"kernelspec": {"name": 1}}}, "kernelspec"),
    ("nan", {**_v45(), "metadata": {"x": float("nan")}}, "NaN"),
    ("nan_text", b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {"x": NaN}, "cells": []}', "JSON"),
    ("lone_surrogate", {**_v45(), "metadata": {"x": "\ud800"}}, "Unicode"),
    ("lone_surrogate_text", '{"nbformat": 4, "metadata": {"x": "\\ud800"}}', "JSON"),
    ("set_value", {**_v45(), "metadata": {"x": {1, 2}}}, "not JSON"),
    ("deep_json", "[" * 5000 + "]" * 5000, "JSON"),
    ("v3_bad_worksheets", {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": 5}, "upgrade"),
    ("not_a_notebook_type", 12345, "JSON text or an object"),
]


@pytest.mark.parametrize(("data", "needle"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_raise_invalid_notebook(data: Any, needle: str) -> None:
    with pytest.raises(InvalidNotebook) as info:
        import_notebook(data)
    err = info.value
    assert needle in err.message
    assert err.code == "invalid_notebook" and err.status == 422
    assert "\n" not in err.message and len(err.message) <= 300 and "Traceback" not in err.message


def test_deeply_nested_dict_input() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidNotebook, match="nested"):
        import_notebook({**_v45(), "metadata": {"x": deep}})


def test_enormous_valid_notebook_hits_the_cell_limit() -> None:
    cells = [_md(f"c{i}") for i in range(MAX_CELLS + 1)]
    with pytest.raises(InvalidNotebook, match=f"at most {MAX_CELLS}"):
        import_notebook(_v45(*cells))
    nb = import_notebook(_v45(*cells[:MAX_CELLS]))
    assert len(nb.cells) == MAX_CELLS
    with pytest.raises(InvalidNotebook):
        import_notebook(_v45(*cells[:11]), max_cells=10)


def test_enormous_cell_is_accepted() -> None:
    big = "x" * (8 * 1024 * 1024)
    nb = import_notebook(json.dumps(_v45(_md("a", source=big))))
    assert nb.cells["a"].source == big


def test_old_versions_upgrade() -> None:
    import nbformat.v2 as v2

    ws = v2.new_worksheet(
        cells=[
            v2.new_code_cell(input="x = 1", prompt_number=1),
            v2.new_text_cell("markdown", source="# hi"),
        ]
    )
    nb = import_notebook(v2.writes_json(v2.new_notebook(worksheets=[ws])))
    cells = ordered_cells(nb)
    assert [(c.id, c.cell_type, c.source) for c in cells] == [
        ("cell-0", "code", "x = 1"),
        ("cell-1", "markdown", "# hi"),
    ]
    assert "orig_nbformat" not in nb.metadata
    nb3 = import_notebook((DATA / "nbformat3_ipython2_running_code.ipynb").read_bytes())
    assert [c.id for c in ordered_cells(nb3)][:2] == ["cell-0", "cell-1"]


# ---------------------------------------------------------------------------- hypothesis

SEED_DOC = json.loads((DATA / "nbgrader_autograded_problem1.ipynb").read_bytes())
SEED_DOC45 = json.loads((DATA / "hf_sagemaker_deploy_tiny_v45.ipynb").read_bytes())
SEED_V3 = json.loads((DATA / "nbformat3_ipython2_running_code.ipynb").read_bytes())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
interesting_keys = st.sampled_from(
    ["id", "cell_type", "source", "metadata", "outputs", "execution_count", "attachments", "nbformat",
     "nbformat_minor", "cells", "output_type", "text", "name", "data", "worksheets", "tags", "kernelspec"]
)  # fmt: skip


def _containers(node: Any, out: list[Any]) -> list[Any]:
    if isinstance(node, dict | list):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, out)
    return out


@st.composite
def mutated_docs(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from([SEED_DOC, SEED_DOC45, SEED_V3])))
    for _ in range(draw(st.integers(1, 4))):
        targets = _containers(doc, [])
        if not targets:
            break
        node = draw(st.sampled_from(targets))
        action = draw(st.sampled_from(["set", "delete", "add", "dup"]))
        if isinstance(node, dict):
            keys = sorted(node)
            if action == "add" or not keys:
                node[draw(interesting_keys | st.text(max_size=6))] = draw(json_values)
            elif action == "delete":
                del node[draw(st.sampled_from(keys))]
            elif action == "dup" and isinstance(node.get("id"), str) and isinstance(doc.get("cells"), list):
                doc["cells"].append(copy.deepcopy(node))  # a duplicate cell id
            else:
                node[draw(st.sampled_from(keys))] = draw(json_values)
        elif node:
            index = draw(st.integers(0, len(node) - 1))
            if action == "delete":
                del node[index]
            elif action == "dup":
                node.append(copy.deepcopy(node[index]))
            else:
                node[index] = draw(json_values)
    return doc


def _check_outcome(data: Any) -> None:
    try:
        nb = import_notebook(data)
    except InvalidNotebook as err:
        assert err.message and "\n" not in err.message
        assert "could not be read (" not in err.message, err.message  # no unforeseen crash
        return
    nbformat.validate(nbformat.from_dict(export_notebook(nb)))
    assert export_bytes(import_notebook(export_bytes(nb))) == export_bytes(nb)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_docs())
def test_random_mutations_only_raise_invalid_notebook(doc: Any) -> None:
    _check_outcome(doc)


RAW_SEED = (DATA / "nbgrader_header_tiny.ipynb").read_bytes()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(RAW_SEED)), st.integers(0, len(RAW_SEED)), st.binary(max_size=8))
def test_random_byte_edits_only_raise_invalid_notebook(start: int, end: int, patch: bytes) -> None:
    lo, hi = sorted((start, end))
    _check_outcome(RAW_SEED[:lo] + patch + RAW_SEED[hi:])
