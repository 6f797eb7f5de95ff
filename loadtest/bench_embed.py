"""Benchmark of the embed page in headless Chromium (Debian's /usr/bin/chromium, via Playwright).

    .venv/bin/python loadtest/bench_embed.py [--pages 20] [--keys 100] [--notebook PATH]

Measures, and prints as one JSON line:
- `bundle`: gzipped bytes of what the page loads first (entry script, its static chunks, CSS)
  and of the lazily loaded KaTeX chunk;
- `first_render_ms`: navigation start → every cell of the notebook built in the DOM
  (`performance.mark("agora:first-render")`), for the 303-cell pandas notebook, median of 3;
- `keystroke_ms`: one editor types `--keys` characters (one every 50 ms) while `--pages` pages
  (half editors, half viewers, the typist included) are open; for every other page the time from
  the keystroke to that page's replica holding it (p50, p99, max). All pages run in one browser
  on one machine, so Chromium's own CPU use is part of the number.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "api" / "embed_static"
NOTEBOOK = ROOT / "tests" / "data" / "notebooks" / "handson_ml3_tools_pandas_303cells.ipynb"
CHROMIUM = os.environ.get("AGORA_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY = "bench-key"


def gz(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), 9))


def bundle_sizes() -> dict[str, int]:
    """Gzipped bytes: the initial load (entry + static imports + CSS) and the lazy KaTeX chunk."""
    manifest = json.loads((STATIC / "manifest.json").read_text())
    entry = STATIC / manifest["js"]
    initial = {entry.name}
    todo = [entry]
    while todo:  # esbuild's static imports look like `from"./chunk-X.js"` or `import"./chunk-X.js"`
        text = todo.pop().read_text()
        for name in re.findall(r'(?:from|import)\s*"\./(chunk-[A-Z0-9]+\.js)"', text):
            if name not in initial:
                initial.add(name)
                todo.append(STATIC / name)
    lazy = {p.name for p in STATIC.glob("chunk-*.js")} - initial
    return {
        "initial_js_gz": sum(gz(STATIC / n) for n in initial),
        "initial_css_gz": gz(STATIC / manifest["css"]),
        "initial_total_gz": sum(gz(STATIC / n) for n in initial) + gz(STATIC / manifest["css"]),
        "lazy_js_gz": sum(gz(STATIC / n) for n in lazy),
        "katex_css_gz": gz(STATIC / manifest["katex_css"]),
    }


class Server:
    """`server.py serve` on a free loopback port with a throwaway data dir."""

    def __init__(self, data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, AGORA_API_KEYS=KEY, AGORA_SECRET="bench-secret-0123456789")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "serve", "--port", str(self.port)],
            env={**env, "AGORA_DATA_DIR": str(data_dir)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method, self.base + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=60, **kw
        )
        r.raise_for_status()
        return r.json()

    def url(self, nb: str, role: str, user: str) -> str:
        body = {"notebook": nb, "user": {"id": user}, "role": role}
        token = self.api("POST", "/api/v1/tokens", json=body)["token"]
        return f"{self.base}/embed/{nb}#token={token}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def first_render(browser: Any, server: Server) -> dict[str, Any]:
    nb = json.loads(NOTEBOOK.read_text())
    server.api("POST", "/api/v1/notebooks", json={"id": "pandas", "notebook": nb})
    cells = len(nb["cells"])
    times: list[float] = []
    welcome: list[float] = []
    dom_ready: list[float] = []
    for i in range(3):
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        page.goto(server.url("pandas", "viewer", f"v{i}"))
        page.wait_for_function(
            "() => performance.getEntriesByName('agora:first-render').length > 0", timeout=60000
        )
        n = page.locator(".cells > .cell").count()
        assert n == cells, (n, cells)
        marks = page.evaluate(
            """() => ["agora:welcome", "agora:first-render"]
                .map(n => performance.getEntriesByName(n)[0].startTime)
                .concat([performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd])"""
        )
        welcome.append(marks[0])
        dom_ready.append(marks[2])
        times.append(marks[1])
        ctx.close()
    return {
        "cells": cells,
        "first_render_ms": round(statistics.median(times), 1),
        "welcome_received_ms": round(statistics.median(welcome), 1),
        "dom_content_loaded_ms": round(statistics.median(dom_ready), 1),
        "runs_ms": [round(t, 1) for t in times],
    }


INSTALL_WATCH = """() => {
  window.seen = {};
  const c = window.agora.client;
  const prev = c.opts.onRemote;
  c.opts.onRemote = (op, touched, e) => {
    const now = Date.now();
    for (const comp of op) if (comp.t === "text") for (const part of comp.ops)
      if (typeof part === "string")
        for (const ch of part.match(/k/g) || []) window.seen[ch + (window.count = (window.count || 0) + 1)] =
          now;
    prev(op, touched, e);
  };
}"""


def keystrokes(browser: Any, server: Server, pages: int, keys: int) -> dict[str, Any]:
    server.api(
        "POST",
        "/api/v1/notebooks",
        json={
            "id": "typing",
            "notebook": {
                "nbformat": 4,
                "nbformat_minor": 5,
                "metadata": {},
                "cells": [
                    {
                        "id": "c1",
                        "cell_type": "code",
                        "source": "",
                        "metadata": {},
                        "outputs": [],
                        "execution_count": None,
                    }
                ],
            },
        },
    )
    ctx = browser.new_context(viewport={"width": 900, "height": 500})
    opened: list[Page] = []
    for i in range(pages):
        page = ctx.new_page()
        page.goto(server.url("typing", "editor" if i % 2 == 0 else "viewer", f"u{i}"))
        page.wait_for_function("() => window.agora && window.agora.client.doc !== null", timeout=60000)
        opened.append(page)
    typist, watchers = opened[0], opened[1:]
    typist.wait_for_selector(".cm-content")
    for w in watchers:
        w.evaluate(INSTALL_WATCH)
    sent: list[int] = []
    for _ in range(keys):
        # Insert through CodeMirror exactly as typing does, and note when.
        sent.append(
            typist.evaluate(
                """() => { const v = window.agora.view.views.get("c1").view;
                           const t = Date.now();
                           const at = v.state.doc.length;
                           v.dispatch({changes: {from: at, insert: "k"}, userEvent: "input.type"});
                           return t; }"""
            )
        )
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    lat: list[float] = []
    for w in watchers:
        while time.monotonic() < deadline and w.evaluate("Object.keys(window.seen).length") < keys:
            time.sleep(0.1)
        seen = w.evaluate("window.seen")
        for i, t in enumerate(sent, start=1):
            got = seen.get(f"k{i}")
            if got is not None:
                lat.append(got - t)
    ctx.close()
    lat.sort()
    expected = keys * len(watchers)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {
        "pages": pages,
        "keys": keys,
        "delivered": f"{len(lat)}/{expected}",
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] if lat else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"bench": "embed", "bundle": bundle_sizes()}
    tmp = Path(tempfile.mkdtemp(prefix="agora-bench-embed-"))
    server = Server(tmp / "data")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                result["render"] = first_render(browser, server)
                if args.keys:
                    result["keystroke"] = keystrokes(browser, server, args.pages, args.keys)
            finally:
                browser.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
