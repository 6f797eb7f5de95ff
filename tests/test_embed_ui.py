"""The notebook UI: structure edits from the toolbar, presence, keyboard running, the dev banner's URLs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.embed_browser import Pages, api, create, embed_env, settled, wait_until


@pytest.fixture
def env(tmp_path: Path, request: Any) -> Iterator[Pages]:
    with embed_env(tmp_path, request) as pages:
        yield pages


def order(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(".cells > .cell", "els => els.map(e => e.dataset.cell)")
    return ids


def server_order(env: Pages, nb: str) -> list[tuple[str, str, str]]:
    cells = api(env.server, "GET", f"/api/v1/notebooks/{nb}/content").json()["cells"]
    return [(c["id"], c["cell_type"], "".join(c["source"])) for c in cells]


def test_add_move_delete_and_change_type_converge(env: Pages) -> None:
    create(
        env.server,
        "nb",
        [
            {"id": "a", "cell_type": "code", "source": "a = 1"},
            {"id": "b", "cell_type": "code", "source": "b = 2"},
            {"id": "c", "cell_type": "markdown", "source": "# C"},
        ],
    )
    ed = env.embed("ada", "nb")
    other = env.embed("bob", "nb")
    ed.click('.cell[data-cell="a"] .cm-content')
    ed.click("text=+ Code")  # below the selected cell
    ed.keyboard.insert_text("new = 3")
    wait_until(lambda: len(order(ed)) == 4, what="cell added")
    new_id = order(ed)[1]
    assert new_id not in ("a", "b", "c")
    ed.hover('.cell[data-cell="b"]')
    ed.click('.cell[data-cell="b"] button[title="Move up"]')
    ed.hover('.cell[data-cell="c"]')
    ed.select_option('.cell[data-cell="c"] select.tb-type', "code")
    ed.hover('.cell[data-cell="a"]')
    ed.click('.cell[data-cell="a"] button[title="Delete cell"]')
    wait_until(lambda: settled(ed), what="structure edits acknowledged")
    want = ["b", new_id, "c"]
    wait_until(lambda: order(ed) == want and order(other) == want, what="both pages show the new order")
    assert server_order(env, "nb") == [
        ("b", "code", "b = 2"),
        (new_id, "code", "new = 3"),
        ("c", "code", "# C"),
    ]
    assert other.locator('.cell[data-cell="c"]').get_attribute("data-type") == "code"
    assert not env.errors, env.errors


def test_presence_shows_other_editors_and_viewer_count(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "hello world"}])
    ada = env.embed("ada", "nb")
    bob = env.embed("bob", "nb")
    env.embed("val", "nb", role="viewer")
    ada.click('.cell[data-cell="c1"] .cm-content')
    ada.keyboard.press("Control+End")
    ada.keyboard.press("Shift+ArrowLeft")
    ada.keyboard.press("Shift+ArrowLeft")
    caret = bob.locator('.cell[data-cell="c1"] .remote-caret')
    caret.wait_for(timeout=5000)
    assert caret.inner_text() == "Ada"
    assert bob.locator('.cell[data-cell="c1"] .remote-sel').inner_text() == "ld"
    viewers = "() => document.querySelector('.viewers').textContent === '1 watching'"
    bob.wait_for_function(viewers, timeout=5000)
    assert bob.locator(".presence .avatar").get_attribute("title") == "Ada"


def test_shift_enter_runs_and_moves_on_ctrl_enter_runs(env: Pages) -> None:
    create(
        env.server,
        "nb",
        [
            {"id": "a", "cell_type": "code", "source": "1 + 1"},
            {"id": "b", "cell_type": "code", "source": "2 + 2"},
        ],
    )
    ed = env.embed("ada", "nb")
    ed.evaluate(
        """() => { const c = window.agora.client; const send = c.send.bind(c);
                   window.sentTypes = []; c.send = (m) => { window.sentTypes.push(m); send(m); }; }"""
    )
    ed.click('.cell[data-cell="a"] .cm-content')
    ed.keyboard.press("Shift+Enter")
    wait_until(
        lambda: ed.evaluate("document.activeElement.closest('.cell')?.dataset.cell") == "b", what="moved on"
    )
    ed.keyboard.press("Control+Enter")
    executes = ed.evaluate("window.sentTypes.filter(m => m.type === 'execute').map(m => m.cells)")
    assert executes == [["a"], ["b"]]
    for cell, n in (("a", 1), ("b", 2)):
        ed.locator(f'.cell[data-cell="{cell}"] .prompt', has_text=f"[{n}]:").first.wait_for(timeout=60000)
    # Shift-Enter on the last cell adds a new one.
    ed.click('.cell[data-cell="b"] .cm-content')
    ed.keyboard.press("Shift+Enter")
    wait_until(lambda: len(order(ed)) == 3, what="a new cell at the end")


def test_dev_banner_urls_open_working_pages(tmp_path: Path, request: Any) -> None:
    with embed_env(tmp_path, request, extra_args=["--dev"]) as env:
        log = env.server.log()
        editor_url = re.search(r"editor page:\s+(\S+)", log)
        viewer_url = re.search(r"viewer page:\s+(\S+)", log)
        assert editor_url and viewer_url, log
        ed = env.open("editor", editor_url.group(1))
        vi = env.open("viewer", viewer_url.group(1))
        assert ed.locator(".conn").inner_text() == "connected"
        assert vi.locator(".conn").inner_text() == "read-only"
        assert "Welcome to Agora" in vi.inner_text(".cells")
        assert not env.errors, env.errors


def test_kicked_user_goes_offline_with_the_reason(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "x"}])
    ada = env.embed("ada", "nb")
    api(env.server, "DELETE", "/api/v1/notebooks/nb/sessions/ada")
    ada.locator(".conn", has_text="offline").wait_for(timeout=10000)
    assert "forbidden" in (ada.get_attribute(".conn", "title") or "")
    ada.wait_for_timeout(1000)
    assert ada.locator(".conn").inner_text() == "offline", "a kicked page must not reconnect by itself"


def test_offline_browser_waits_for_the_network_then_resumes(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": ""}])
    ada = env.embed("ada", "nb")
    ada.click('.cell[data-cell="c1"] .cm-content')
    ada.keyboard.insert_text("one ")
    wait_until(lambda: settled(ada), what="first edit acknowledged")
    ada.context.set_offline(True)  # the browser says so at once, even though the socket looks open
    ada.locator(".conn", has_text="offline").wait_for(timeout=10000)
    ada.keyboard.insert_text("two")
    ada.context.set_offline(False)
    ada.locator(".conn", has_text="connected").wait_for(timeout=15000)
    wait_until(lambda: settled(ada), what="offline edit acknowledged")
    assert server_order(env, "nb") == [("c1", "code", "one two")]
