"""Throughput of the OT core, printed as one JSON line.

    .venv/bin/python loadtest/bench_ot.py [--seconds 1.0]

- text_transforms_per_s: `transform_text` of one random splice past another on a 2,000-code-point
  source (typing-sized edits: a few inserts and deletes each).
- op_transform_apply_per_s: the server's per-op work on a 300-cell notebook: transform an
  incoming op (1-3 user components) past one concurrent committed op, then `apply_op`.
- op_transform10_apply_per_s: the same with the incoming op 10 versions behind (10 transforms).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.ot.components import apply_op, transform_op
from engine.ot.model import Cell, Notebook
from engine.ot.poskeys import keys_between
from engine.ot.text import normalize_text, transform_text

WORDS = ["x = 1\n", "print(y)\n", "héllo ", "👩\u200d💻", "漢字", "# note\n", "for i in range(3):\n    "]


def splice(rnd: random.Random, n: int) -> list[Any]:
    ops: list[Any] = []
    pos = 0
    for _ in range(rnd.randint(1, 3)):
        k = rnd.randint(0, max(0, (n - pos) // 3))
        ops.append(k)
        pos += k
        if rnd.random() < 0.6 or pos >= n:
            ops.append(rnd.choice(WORDS))
        else:
            d = rnd.randint(1, min(5, n - pos))
            ops.append({"d": d})
            pos += d
    return normalize_text(ops)


def notebook(rnd: random.Random) -> Notebook:
    cells = {}
    for i, pos in enumerate(keys_between(None, None, 300)):
        source = "".join(rnd.choice(WORDS) for _ in range(30))
        cells[f"cell{i}"] = Cell(id=f"cell{i}", pos=pos, cell_type="code", source=source)
    return Notebook(metadata={"kernelspec": {"name": "python3"}}, cells=cells)


def user_op(rnd: random.Random, nb: Notebook) -> list[dict[str, Any]]:
    op: list[dict[str, Any]] = []
    hot = [f"cell{i}" for i in range(5)]  # concurrent editors cluster on a few cells
    for _ in range(rnd.randint(1, 3)):
        cid = rnd.choice(hot)
        r = rnd.random()
        if r < 0.8:
            op.append({"t": "text", "id": cid, "ops": splice(rnd, len(nb.cells[cid].source))})
        elif r < 0.9:
            op.append({"t": "cell_move", "id": cid, "pos": rnd.choice(["0", "V", "z"])})
        else:
            op.append({"t": "meta_set", "id": cid, "key": "tags", "value": ["a"]})
    return op


def rate(fn: Callable[[int], None], n: int, seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(200):
            fn((done + i) % n)
        done += 200
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    rnd = random.Random(1)

    pairs = [(splice(rnd, 2000), splice(rnd, 2000)) for _ in range(1000)]

    def text(i: int) -> None:
        a, b = pairs[i]
        transform_text(a, b, op_first=False)

    nb = notebook(rnd)
    cases = [(user_op(rnd, nb), [user_op(rnd, nb) for _ in range(10)]) for _ in range(500)]

    def full(i: int) -> None:
        incoming, committed = cases[i]
        after = apply_op(nb, committed[0], 1)
        apply_op(after, transform_op(incoming, committed[0], op_first=False), 2)

    def full10(i: int) -> None:
        incoming, committed = cases[i]
        op = incoming
        for other in committed:
            op = transform_op(op, other, op_first=False)
        apply_op(nb, op, 2)

    # `full` includes applying the committed op too (to have a document it applies to); report
    # the transform+apply of the incoming op alone by subtracting that apply's cost.
    def apply_only(i: int) -> None:
        apply_op(nb, cases[i][1][0], 1)

    t_full = 1 / rate(full, len(cases), args.seconds)
    t_apply = 1 / rate(apply_only, len(cases), args.seconds)
    result = {
        "bench": "ot",
        "python": sys.version.split()[0],
        "text_transforms_per_s": round(rate(text, len(pairs), args.seconds)),
        "op_transform_apply_per_s": round(1 / max(t_full - t_apply, 1e-9)),
        "op_transform10_apply_per_s": round(rate(full10, len(cases), args.seconds)),
        "cells": len(nb.cells),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
