"""Untrusted outputs and markdown in the embed page: nothing runs, the text still shows.

Outputs are server components, so they come in through an uploaded ipynb. Every payload tries to
set `window.__pwned` (or open a dialog); the test also clicks the links.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.embed_browser import Pages, create, embed_env

PWN = "window.__pwned=(window.__pwned||0)+1;alert(1)"
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" onload="' + PWN + '">'
    "<script>" + PWN + "</script>"
    '<rect width="120" height="40" fill="#c00"/><text x="5" y="25">svg-text</text></svg>'
)
# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f2b5a40000000049454e44ae426082"
    )
).decode()


def display(data: dict[str, Any]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


OUTPUTS = [
    display({"text/html": "<b id='bold'>bold-text</b><script>" + PWN + "</script>", "text/plain": "x"}),
    display({"text/html": f"<img src='x' onerror='{PWN}'><span>img-text</span>"}),
    display({"text/html": f"<a id='jslink' href='javascript:{PWN}'>js-link</a>"}),
    display({"text/html": f"<iframe srcdoc='<script>parent.{PWN}</script>'></iframe><i>frame-text</i>"}),
    display({"image/svg+xml": SVG, "text/plain": "<svg figure>"}),
    display({"application/javascript": PWN, "text/plain": "js-plain-text"}),
    display({"application/vnd.jupyter.widget-view+json": {"model_id": "abc"}, "text/plain": "widget-text"}),
    display({"text/markdown": f"**md-output** <img src=x onerror='{PWN}'> [mdlink](javascript:{PWN})"}),
    display({"image/png": PNG}),
    display({"text/latex": "$$x^2 + 1$$", "text/plain": "latex"}),
    {"output_type": "stream", "name": "stdout", "text": "\x1b[31mred-stream\x1b[0m plain\n"},
    {
        "output_type": "error",
        "ename": "ValueError",
        "evalue": "bad",
        "traceback": ["\x1b[0;31mValueError\x1b[0m: tb-text <script>" + PWN + "</script>"],
    },
    {"output_type": "stream", "name": "stdout", "text": "y" * 250_000},
]


@pytest.fixture
def env(tmp_path: Path, request: Any) -> Iterator[Pages]:
    with embed_env(tmp_path, request) as pages:
        yield pages


def test_hostile_outputs_run_nothing_and_render_text(env: Pages) -> None:
    create(
        env.server,
        "nb",
        [
            {
                "id": "code",
                "cell_type": "code",
                "source": "display(...)",
                "outputs": OUTPUTS,
                "execution_count": 7,
            },
            {
                "id": "md",
                "cell_type": "markdown",
                "source": f"# md-title\n<img src=x onerror='{PWN}'> <script>{PWN}</script> "
                f"[click-me](javascript:{PWN}) $a^2$",
            },
            {
                "id": "att",
                "cell_type": "markdown",
                "source": "![dot](attachment:dot.png) ![pic](attachment:pic.svg) att-text",
                "attachments": {"dot.png": {"image/png": PNG}, "pic.svg": {"image/svg+xml": SVG}},
            },
        ],
    )
    page = env.embed("ada", "nb")
    page.wait_for_selector("#bold")
    text = page.inner_text(".cells")
    for visible in (
        "bold-text",
        "img-text",
        "js-link",
        "frame-text",
        "js-plain-text",
        "widget-text",
        "md-output",
        "red-stream",
        "tb-text",
        "md-title",
        "click-me",
        "[7]:",
        "Output truncated",
    ):
        assert visible in text, visible
    # ANSI colours became classes (the CSP forbids style attributes).
    assert page.locator(".out-text .ansi-red-fg", has_text="red-stream").count() == 1
    # SVG and PNG are images; the SVG one is a data URL (no script can run in an <img>).
    imgs = page.eval_on_selector_all(
        ".out-image", "els => els.map(e => [e.src.slice(0, 30), e.naturalWidth])"
    )
    assert any(src.startswith("data:image/svg+xml") and w == 120 for src, w in imgs), imgs
    assert any(src.startswith("data:image/png;base64") and w == 1 for src, w in imgs), imgs
    # Nothing executable survived sanitising.
    assert page.locator(".cells script").count() == 0
    assert page.locator(".cells iframe").count() == 0
    assert page.locator(".cells [onerror]").count() == 0
    hrefs = page.eval_on_selector_all(".cells a", "els => els.map(e => e.getAttribute('href'))")
    assert all(h is None or not h.lower().startswith("javascript") for h in hrefs), hrefs
    # Markdown attachments become data-URL images (an SVG one cannot run its script either).
    att = page.eval_on_selector_all(
        '.cell[data-cell="att"] img', "els => els.map(e => [e.src.slice(0, 22), e.naturalWidth])"
    )
    assert att == [["data:image/png;base64,", 1], ["data:image/svg+xml;cha", 120]], att
    page.click("#jslink")
    page.click("text=click-me")
    page.wait_for_selector(".katex", timeout=10000)  # KaTeX loads lazily and renders
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert not env.errors, env.errors
