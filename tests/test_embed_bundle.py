"""The embed page's JavaScript: same OT as the server, unit tests, and a committed bundle that is current.

- Parity: random splices (with astral characters) and component pairs are transformed by
  `engine.ot` and by `web/src/ot.js` (under node); the results must be identical.
- `node --test web/test/*.test.mjs`: the sync state machine without a DOM.
- The committed bundle (`api/embed_static/`) is byte-identical to a fresh `web/build.mjs` run
  (dependencies from the lockfile with `npm ci` when `web/node_modules` is missing).

These need node; without it they skip with that reason (`make test` installs node first).
"""

from __future__ import annotations

import filecmp
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.ot.components import transform_op
from engine.ot.poskeys import key_between
from engine.ot.text import apply_text, normalize_text, transform_position

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
NODE = shutil.which("node")
NPM = shutil.which("npm")
pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed (make test installs them)"
)

ALPHABET = "ab\n🎉é😀"


def node_modules() -> None:
    if not (WEB / "node_modules" / "esbuild").exists():
        subprocess.run([NPM or "npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=600)


def rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def rand_splice(rng: random.Random, length: int) -> list[Any]:
    """A normalised splice valid on a string of `length` code points."""
    out: list[Any] = []
    pos = 0
    while pos < length and rng.random() < 0.8:
        skip = rng.randint(0, length - pos)
        if skip:
            out.append(skip)
            pos += skip
        if rng.random() < 0.5 and pos < length:
            d = rng.randint(1, length - pos)
            out.append({"d": d})
            pos += d
        if rng.random() < 0.6:
            out.append(rand_text(rng, rng.randint(1, 3)))
    if not out:
        out.append(rand_text(rng, 2))
    return normalize_text(out)


def rand_component(rng: random.Random, length: int) -> dict[str, Any]:
    kind = rng.choice(
        ["text", "text", "text", "cell_move", "cell_type", "cell_delete", "meta_set", "outputs_clear"]
    )
    cell = rng.choice(["c1", "c2"])
    if kind == "text":
        return {"t": "text", "id": cell, "ops": rand_splice(rng, length)}
    if kind == "cell_move":
        return {"t": "cell_move", "id": cell, "pos": rng.choice(["a", "b", "V"])}
    if kind == "cell_type":
        return {"t": "cell_type", "id": cell, "value": rng.choice(["code", "markdown"])}
    if kind == "meta_set":
        return {"t": "meta_set", "id": cell, "key": rng.choice(["k", "tags"]), "value": rng.randint(0, 3)}
    return {"t": kind, "id": cell}


def run_parity(cases: list[dict[str, Any]]) -> list[Any]:
    proc = subprocess.run(
        [NODE or "node", str(WEB / "tools" / "parity.mjs")],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: list[Any] = json.loads(proc.stdout)
    return result


def test_browser_ot_matches_the_server() -> None:
    rng = random.Random(20261201)
    cases: list[dict[str, Any]] = []
    expected: list[Any] = []
    for _ in range(1500):
        source = rand_text(rng, rng.randint(0, 12))
        n = len(source)
        a, b = rand_splice(rng, n), rand_splice(rng, n)
        first = rng.random() < 0.5
        cases.append({"kind": "apply", "source": source, "ops": a})
        expected.append(apply_text(source, a))
        op_a = [{"t": "text", "id": "c1", "ops": a}] if rng.random() < 0.5 else [rand_component(rng, n)]
        op_b = [rand_component(rng, n), {"t": "text", "id": "c1", "ops": b}]
        cases.append({"kind": "transform", "op": op_a, "other": op_b, "op_first": first})
        expected.append(transform_op(op_a, op_b, op_first=first))
        pos = rng.randint(0, n)
        stick = rng.random() < 0.5
        cases.append({"kind": "position", "pos": pos, "ops": a, "stick_right": stick})
        expected.append(transform_position(pos, a, stick_right=stick))
        cp = rng.randint(0, n)
        cases.append({"kind": "utf16", "s": source, "cp": cp})
        expected.append([len(source[:cp].encode("utf-16-le")) // 2, cp])
    for a_key, b_key in [
        (None, None),
        ("V", None),
        (None, "V"),
        ("a", "b"),
        ("az", "b"),
        ("1", "2"),
        ("Zz", "a"),
    ]:
        cases.append({"kind": "key_between", "a": a_key, "b": b_key})
        expected.append(key_between(a_key, b_key))
    got = run_parity(cases)
    for case, want, have in zip(cases, expected, got, strict=True):
        assert have == want, (case, want, have)


def test_sync_state_machine_unit_tests() -> None:
    tests = sorted(str(p) for p in (WEB / "test").glob("*.test.mjs"))
    assert tests
    proc = subprocess.run([NODE or "node", "--test", *tests], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


def test_committed_bundle_is_current(tmp_path: Path) -> None:
    node_modules()
    out = tmp_path / "build"
    subprocess.run([NODE or "node", str(WEB / "build.mjs"), str(out)], cwd=WEB, check=True, timeout=300)
    committed = ROOT / "api" / "embed_static"
    cmp = filecmp.dircmp(out, committed)
    assert not cmp.left_only and not cmp.right_only, (cmp.left_only, cmp.right_only)
    for name in sorted(p.name for p in out.iterdir()):
        assert (out / name).read_bytes() == (committed / name).read_bytes(), f"{name} differs: run `make web`"
