"""The embed page as a sync client, in real Chromium against the real server.

Two editors typing in one cell at once converge with the server; a viewer sees edits within a
second and cannot type; a server restart is resumed with nothing lost and nothing doubled; 50
cells render in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.embed_browser import (
    Pages,
    create,
    editor_text,
    embed_env,
    page_source,
    server_sources,
    settled,
    wait_until,
)


@pytest.fixture
def env(tmp_path: Path, request: Any) -> Iterator[Pages]:
    with embed_env(tmp_path, request) as pages:
        yield pages
    log = pages.server.log()
    assert "Traceback" not in log, log[-3000:]
    assert "v1." not in log, "a token reached the server log"


def cell_editor(page: Page, cell: str) -> str:
    sel = f'.cell[data-cell="{cell}"] .cm-content'
    page.wait_for_selector(sel, timeout=10000)
    return sel


def subsequence(needle: str, hay: str) -> bool:
    it = iter(hay)
    return all(ch in it for ch in needle)


def test_two_editors_type_at_once_and_converge(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "start\nend"}])
    a = env.embed("ada", "nb")
    b = env.embed("bob", "nb")
    for p in (a, b):
        p.click(cell_editor(p, "c1"))
        p.keyboard.press("Control+End")
    typed_a = "A🎉a\nAA"
    typed_b = "B😀b\nBB"
    # Interleave keystrokes so both pages have ops in flight at the same time.
    for ka, kb in zip(typed_a, typed_b, strict=True):
        for page, key in ((a, ka), (b, kb)):
            if key == "\n":
                page.keyboard.press("Enter")
            else:
                page.keyboard.insert_text(key)
    wait_until(lambda: settled(a) and settled(b), what="both pages settled")
    wait_until(
        lambda: page_source(a, "c1") == page_source(b, "c1") == server_sources(env.server, "nb")["c1"],
        what="pages and server agree",
    )
    final = server_sources(env.server, "nb")["c1"]
    assert editor_text(a, "c1") == editor_text(b, "c1") == final
    assert sorted(final) == sorted("start\nend" + typed_a + typed_b), final
    assert subsequence(typed_a, final) and subsequence(typed_b, final), final
    assert final.startswith("start\nend")
    # Certainly concurrent: both pages hold back what they send, type at the same spot (the end),
    # then release. Each page's op in flight was made without the other's.
    for p in (a, b):
        p.keyboard.press("Control+End")
        p.evaluate(HOLD)
    more_a, more_b = "🎉x\ny", "😀z\nw"
    for ka, kb in zip(more_a, more_b, strict=True):
        for page, key in ((a, ka), (b, kb)):
            page.keyboard.press("Enter") if key == "\n" else page.keyboard.insert_text(key)
    assert a.evaluate("window.agora.client.doc.pending.length") > 0
    for p in (a, b):
        p.evaluate(RELEASE)
    wait_until(lambda: settled(a) and settled(b), what="both pages settled after release")
    wait_until(
        lambda: page_source(a, "c1") == page_source(b, "c1") == server_sources(env.server, "nb")["c1"],
        what="pages and server agree after concurrent typing",
    )
    final2 = server_sources(env.server, "nb")["c1"]
    assert editor_text(a, "c1") == editor_text(b, "c1") == final2
    assert final2.startswith(final)
    rest = final2[len(final) :]
    assert sorted(rest) == sorted(more_a + more_b), rest
    assert subsequence(more_a, rest) and subsequence(more_b, rest), rest
    assert not env.errors, env.errors


HOLD = """() => { const c = window.agora.client; c.realSend = c.send; c.held = [];
                  c.send = (m) => c.held.push(m); }"""
RELEASE = """() => { const c = window.agora.client; c.send = c.realSend;
                     for (const m of c.held) c.send(m); }"""


def test_viewer_sees_edits_within_a_second_and_cannot_type(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "x = 1"}])
    editor = env.embed("ada", "nb")
    viewer = env.embed("val", "nb", role="viewer")
    assert viewer.locator(".conn").inner_text() == "read-only"
    assert viewer.locator(".edit-buttons").is_hidden()
    assert viewer.locator(".cell-toolbar").count() == 0
    editor.click(cell_editor(editor, "c1"))
    editor.keyboard.press("Control+End")
    for i, ch in enumerate("\ny = '🎉'"):
        if ch == "\n":
            editor.keyboard.press("Enter")
        else:
            editor.keyboard.insert_text(ch)
        wait_until(lambda: settled(editor), what="editor op acknowledged")
        expected = page_source(editor, "c1")
        start = time.monotonic()
        viewer.wait_for_function(
            "([id, want]) => window.agora.client.doc.nb.cells.get(id).source === want",
            arg=["c1", expected],
            timeout=1000,
        )
        assert time.monotonic() - start < 1.0, f"keystroke {i} took too long to reach the viewer"
    assert editor_text(viewer, "c1") == "x = 1\ny = '🎉'"
    # The viewer's editor is not editable, and typing into it changes nothing anywhere.
    sel = cell_editor(viewer, "c1")
    assert viewer.get_attribute(sel, "contenteditable") == "false"
    viewer.click(sel)
    viewer.keyboard.type("HACK")
    viewer.keyboard.press("Enter")
    time.sleep(0.5)
    assert editor_text(viewer, "c1") == "x = 1\ny = '🎉'"
    assert server_sources(env.server, "nb")["c1"] == "x = 1\ny = '🎉'"
    assert viewer.evaluate("window.agora.client.ws.readyState") == 1, "the viewer was disconnected"
    assert not env.errors, env.errors


def test_restart_resumes_with_nothing_lost_or_doubled(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": ""}])
    page = env.embed("ada", "nb")
    other = env.embed("bob", "nb")
    page.click(cell_editor(page, "c1"))
    page.keyboard.insert_text("before|")
    wait_until(lambda: settled(page), what="first edit acknowledged")
    client_id = page.evaluate("window.agora.client.doc.client")
    env.server.stop()
    wait_until(lambda: page.locator(".conn").inner_text() == "reconnecting", what="reconnecting state")
    # Typed while the server is down: applied locally, sent after the resume.
    for ch in "offline🎉|":
        page.keyboard.insert_text(ch)
    env.server.start()
    wait_until(lambda: page.locator(".conn").inner_text() == "connected", timeout=30, what="reconnected")
    page.keyboard.insert_text("after")
    want = "before|offline🎉|after"
    wait_until(lambda: settled(page), what="edits acknowledged after resume")
    assert page.evaluate("window.agora.client.doc.client") == client_id, "resume must keep the client id"
    wait_until(lambda: server_sources(env.server, "nb")["c1"] == want, what="server has every edit once")
    wait_until(lambda: page_source(other, "c1") == want, timeout=30, what="the other page caught up")
    assert editor_text(page, "c1") == want
    assert editor_text(other, "c1") == want


def test_fifty_cells_render_in_order(env: Pages) -> None:
    cells = []
    for i in range(50):
        if i % 5 == 0:
            cells.append({"id": f"m{i:02d}", "cell_type": "markdown", "source": f"## Section {i}"})
        else:
            cells.append({"id": f"c{i:02d}", "cell_type": "code", "source": f"value_{i} = {i} * 2"})
    create(env.server, "big", cells)
    page = env.embed("ada", "big")
    # Editors are created lazily, for the cells near the viewport only.
    assert 0 < page.locator(".cm-editor").count() < 40
    ids = page.eval_on_selector_all(".cells > .cell", "els => els.map(e => e.dataset.cell)")
    assert ids == [c["id"] for c in cells]
    assert page.locator("h2", has_text="Section 45").count() == 1
    texts = page.inner_text(".cells")
    for i in range(50):
        if i % 5:
            assert f"value_{i} = {i} * 2" in texts
    page.locator('.cell[data-cell="c49"]').scroll_into_view_if_needed()
    cell_editor(page, "c49")
    assert page.locator(".cm-editor").count() >= 1
    assert not env.errors, env.errors


def test_crlf_sources_are_normalised_on_the_first_edit(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "x"}])
    ada = env.embed("ada", "nb")
    bob = env.embed("bob", "nb")
    # Another client (not through an editor) writes \r\n and a lone \r into the source.
    raw = env.embed("raw", "nb")
    raw.evaluate(
        """() => window.agora.client.edit([{t: "text", id: "c1", ops: [1, "\\r\\nb = 2\\rc = 3"]}])"""
    )
    wait_until(
        lambda: server_sources(env.server, "nb")["c1"] == "x\r\nb = 2\rc = 3", what="raw source stored"
    )
    wait_until(lambda: page_source(ada, "c1") == "x\r\nb = 2\rc = 3", what="ada got the raw op")
    assert editor_text(ada, "c1") == "x\nb = 2\nc = 3"
    ada.click(cell_editor(ada, "c1"))
    ada.keyboard.press("Control+End")
    ada.keyboard.insert_text("🎉")
    want = "x\nb = 2\nc = 3🎉"
    wait_until(lambda: settled(ada), what="edit acknowledged")
    wait_until(lambda: server_sources(env.server, "nb")["c1"] == want, what="server normalised")
    wait_until(lambda: page_source(bob, "c1") == want, what="other page normalised")
    assert editor_text(bob, "c1") == want
    assert not env.errors, env.errors
