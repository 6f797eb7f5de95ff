"""Random generators shared by the OT tests (notebooks, splices, components), and their own checks.

Everything is driven by a `random.Random` so that the same generators serve hypothesis
(`st.randoms()`) and the fast seeded loops that cover every pair of component kinds.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import tests.hypothesis_profiles  # noqa: F401
from engine.ot.components import SERVER_KINDS, USER_KINDS, Component, Op, apply_op
from engine.ot.model import Cell, Notebook, build_displays, notebook_to_state
from engine.ot.poskeys import key_between
from engine.ot.text import TextOp, normalize_text

# Astral (𝄞, emoji), combining marks, ZWJ emoji sequences, flags, RTL and CJK, bidi marks.
PIECES = [
    "a", "b", "z", " ", "\n", "é", "e\u0301", "a\u0308\u0323", "👍", "👍🏽", "👩\u200d💻",
    "👨\u200d👩\u200d👧", "🇫🇷", "𝄞", "𠀋", "שלום", "مرحبا", "\u200f", "漢字", "かな", "ℵ",
]  # fmt: skip
KINDS = sorted(USER_KINDS | SERVER_KINDS)
CELL_IDS = ["c0", "c1", "c2"]
META_KEYS = ["k1", "k2"]
DISPLAY_IDS = ["d1", "d2"]


def rand_text(rnd: random.Random, max_pieces: int = 3) -> str:
    return "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, max_pieces)))


def rand_splice(rnd: random.Random, source: str, *, max_len: int = 6) -> TextOp:
    """A random valid splice for `source` (may be `[]`)."""
    n = len(source)
    ops: list[Any] = []
    pos = 0
    while True:
        r = rnd.random()
        if r < 0.4 and pos < n:
            k = rnd.randint(1, n - pos)
            ops.append(k)
            pos += k
        elif r < 0.7:
            ops.append(rand_text(rnd))
        elif pos < n:
            k = rnd.randint(1, min(n - pos, max_len))
            ops.append({"d": k})
            pos += k
        if rnd.random() < 0.3:
            break
    return normalize_text(ops)


def rand_output(rnd: random.Random) -> dict[str, Any]:
    if rnd.random() < 0.5:
        return {"output_type": "stream", "name": rnd.choice(["stdout", "stderr"]), "text": rand_text(rnd)}
    return {"output_type": "display_data", "data": {"text/plain": rand_text(rnd)}, "metadata": {}}


def rand_notebook(rnd: random.Random) -> Notebook:
    """A few cells (some tombstoned, some with outputs and display ids) and notebook metadata."""
    cells: dict[str, Cell] = {}
    for cid in CELL_IDS[: rnd.randint(1, len(CELL_IDS))]:
        outputs = [rand_output(rnd) for _ in range(rnd.randint(0, 3))]
        cells[cid] = Cell(
            id=cid,
            pos=rnd.choice(["V", "k", "k", "a1"]),
            cell_type=rnd.choice(["code", "code", "markdown", "raw"]),
            source="".join(rand_text(rnd) for _ in range(rnd.randint(0, 3))),
            metadata={k: rnd.randint(0, 3) for k in META_KEYS if rnd.random() < 0.5},
            attachments=None if rnd.random() < 0.8 else {"x.png": {"image/png": "AA=="}},
            outputs=outputs,
            display_ids=[rnd.choice([None, *DISPLAY_IDS]) for _ in outputs],
            execution_count=rnd.choice([None, 1, 7]),
            exec_state=rnd.choice([None, "done", "running"]),
            deleted=rnd.random() < 0.3,
            created=rnd.randint(0, 3),
        )
    return Notebook(
        metadata={k: rnd.randint(0, 3) for k in META_KEYS if rnd.random() < 0.5},
        cells=cells,
        displays=build_displays(cells),
    )


def rand_component(rnd: random.Random, nb: Notebook, kind: str, fresh_id: str) -> Component | None:
    """A random component of `kind` valid against `nb`, or None if `nb` has no cell for it."""
    if kind == "display_update":
        return {
            "t": kind,
            "display_id": rnd.choice(DISPLAY_IDS),
            "output": {"output_type": "display_data", "data": {"text/plain": rand_text(rnd)}, "metadata": {}},
        }
    if kind == "meta_set" and rnd.random() < 0.3:
        return {"t": kind, "id": None, "key": rnd.choice(META_KEYS), "value": rnd.choice([None, 5, "v"])}
    if kind == "cell_insert":
        cell: dict[str, Any] = {"cell_type": rnd.choice(["code", "markdown"]), "source": rand_text(rnd)}
        if rnd.random() < 0.5:
            cell["metadata"] = {"k1": 1}
        return {"t": kind, "id": fresh_id, "pos": rnd.choice(["V", "k", key_between("V", "k")]), "cell": cell}
    if not nb.cells:
        return None
    cid = rnd.choice(sorted(nb.cells))
    cell_obj = nb.cells[cid]
    if kind in ("cell_delete", "cell_restore", "outputs_clear"):
        return {"t": kind, "id": cid}
    if kind == "cell_move":
        return {"t": kind, "id": cid, "pos": rnd.choice(["0", "V", "k", "kV", "z"])}
    if kind == "text":
        ops = rand_splice(rnd, cell_obj.source)
        return {"t": kind, "id": cid, "ops": ops} if ops else None
    if kind == "cell_type":
        return {"t": kind, "id": cid, "value": rnd.choice(["code", "markdown", "raw"])}
    if kind == "meta_set":
        return {"t": kind, "id": cid, "key": rnd.choice(META_KEYS), "value": rnd.choice([None, 5, "v"])}
    if kind == "outputs_append":
        c: Component = {"t": kind, "id": cid, "output": rand_output(rnd)}
        if rnd.random() < 0.5:
            c["display_id"] = rnd.choice(DISPLAY_IDS)
        return c
    if kind == "stream_append":
        return {"t": kind, "id": cid, "name": rnd.choice(["stdout", "stderr"]), "text": rand_text(rnd)}
    if kind == "exec_count":
        return {"t": kind, "id": cid, "n": rnd.choice([None, 1, 2, 3])}
    if kind == "exec_state":
        return {"t": kind, "id": cid, "state": rnd.choice(["queued", "running", "done", "error", "aborted"])}
    raise AssertionError(kind)


def rand_op(
    rnd: random.Random, nb: Notebook, kinds: list[str], prefix: str, *, size: int | None = None
) -> Op:
    """An op of 1-3 components (kinds drawn from `kinds`), each valid after the previous ones."""
    op: Op = []
    doc = nb
    for i in range(size if size is not None else rnd.randint(1, 3)):
        c = rand_component(rnd, doc, rnd.choice(kinds), f"{prefix}{i}")
        if c is None:
            continue
        doc = apply_op(doc, [c], 99)
        op.append(c)
    return op


def state(nb: Notebook) -> str:
    """A canonical, comparable rendering of everything in `nb` (also checks the displays index)."""
    assert nb.displays == build_displays(nb.cells)
    return json.dumps(notebook_to_state(nb), sort_keys=True, ensure_ascii=False)


MARKER = re.compile("«[^»]*»")


# ------------------------------------------------------------------------------ generator checks


def test_generators_make_valid_ops() -> None:
    rnd = random.Random(1)
    for _ in range(300):
        nb = rand_notebook(rnd)
        op = rand_op(rnd, nb, KINDS, "n")
        apply_op(nb, op, 5)  # raises if the generator made an invalid op


def test_pieces_have_no_surrogates_and_include_astral() -> None:
    text = "".join(PIECES)
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
    assert any(ord(ch) > 0xFFFF for ch in text)
