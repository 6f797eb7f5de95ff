"""Running code from the embed page (real ipykernel): outputs reach every page; input() and getpass()."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.embed_browser import Pages, api, create, embed_env


@pytest.fixture
def env(tmp_path: Path, request: Any) -> Iterator[Pages]:
    with embed_env(tmp_path, request) as pages:
        yield pages


def outputs_text(page: Page, cell: str) -> str:
    text: str = page.inner_text(f'.cell[data-cell="{cell}"] .outputs')
    return text


def run(page: Page, cell: str) -> None:
    page.click(f'.cell[data-cell="{cell}"] .cm-content')
    page.keyboard.press("Control+Enter")


def test_running_a_cell_shows_its_output_in_every_page(env: Pages) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "print('hi 🎉')\n6 * 7"}])
    ada = env.embed("ada", "nb")
    bob = env.embed("bob", "nb")
    val = env.embed("val", "nb", role="viewer")
    run(ada, "c1")
    for page in (ada, bob, val):
        out = page.locator('.cell[data-cell="c1"] .outputs')
        out.get_by_text("hi 🎉").wait_for(timeout=60000)
        out.get_by_text("42").wait_for(timeout=30000)
        page.locator('.cell[data-cell="c1"] .prompt', has_text="[1]:").first.wait_for(timeout=30000)
    assert val.locator(".kernel-state").inner_text() != ""
    assert not env.errors, env.errors


def test_input_prompts_only_the_editor_who_ran_the_cell(env: Pages) -> None:
    create(
        env.server,
        "nb",
        [
            {"id": "ask", "cell_type": "code", "source": "name = input('Name? ')\nprint('hello', name)"},
            {
                "id": "pw",
                "cell_type": "code",
                "source": "import getpass\nsecret = getpass.getpass('PIN: ')\nlen(secret)",
            },
        ],
    )
    ada = env.embed("ada", "nb")
    bob = env.embed("bob", "nb")
    run(ada, "ask")
    field = ada.locator('.cell[data-cell="ask"] .input-field')
    field.wait_for(timeout=60000)
    assert field.get_attribute("type") == "text"
    assert "Name?" in ada.inner_text('.cell[data-cell="ask"] .input-request')
    assert bob.locator(".input-field").count() == 0
    field.fill("Ada 🎉")
    field.press("Enter")
    for page in (ada, bob):
        page.locator('.cell[data-cell="ask"] .outputs').get_by_text("hello Ada 🎉").wait_for(timeout=30000)
    assert "Name? Ada 🎉" in outputs_text(bob, "ask")
    # getpass: a password field, and the answer never enters the document.
    run(ada, "pw")
    pw = ada.locator('.cell[data-cell="pw"] .input-field')
    pw.wait_for(timeout=30000)
    assert pw.get_attribute("type") == "password"
    pw.fill("s3cret-1234")
    pw.press("Enter")
    bob.locator('.cell[data-cell="pw"] .outputs').get_by_text("11").wait_for(timeout=30000)
    content = api(env.server, "GET", "/api/v1/notebooks/nb/content").text
    assert "s3cret-1234" not in content
    assert "s3cret-1234" not in bob.inner_text(".cells")
    assert not env.errors, env.errors


def test_run_all_queues_and_interrupt_stops_the_running_cell(env: Pages) -> None:
    create(
        env.server,
        "nb",
        [
            {"id": "slow", "cell_type": "code", "source": "import time\nprint('sleeping')\ntime.sleep(60)"},
            {"id": "next", "cell_type": "code", "source": "print('after')"},
        ],
    )
    ada = env.embed("ada", "nb")
    val = env.embed("val", "nb", role="viewer")
    ada.click("text=Run all")
    ada.locator('.cell[data-cell="slow"] .outputs').get_by_text("sleeping").wait_for(timeout=60000)
    # The viewer sees the running and queued marks and the busy kernel.
    val.locator('.cell[data-cell="slow"].running').wait_for(timeout=10000)
    assert val.locator('.cell[data-cell="slow"] .prompt').first.inner_text() == "[*]:"
    assert "busy" in val.locator(".kernel-state").inner_text()
    ada.click("text=Interrupt")
    val.locator('.cell[data-cell="slow"] .outputs').get_by_text("KeyboardInterrupt").first.wait_for(
        timeout=30000
    )
    assert not env.errors, env.errors
