"""Embedding: the page in an iframe on another origin, tokens by postMessage, CSP, caching, API docs.

The platform's page is served by a second loopback HTTP server (another port, so another origin).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.embed_browser import Pages, create, embed_env, mint, server_sources, settled, wait_until
from tests.server_process import free_port


class Platform:
    """A tiny 'learning platform' serving one parent page that embeds the notebook."""

    def __init__(self) -> None:
        self.html = b""
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(platform.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Platform:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


PARENT = """<!doctype html><html><body><h1>Course page</h1>
<iframe id="nb" src="{src}" width="1000" height="600"></iframe>
<script>
  const tokens = {tokens};
  let handed = 0;
  window.addEventListener("message", (ev) => {{
    if (ev.origin !== "{agora}" || ev.data?.type !== "agora:token_request") return;
    window.requests = (window.requests || 0) + 1;
    const token = tokens[Math.min(handed++, tokens.length - 1)];
    document.getElementById("nb").contentWindow.postMessage({{type: "agora:token", token}}, "{agora}");
  }});
</script></body></html>"""


@pytest.fixture
def platform() -> Iterator[Platform]:
    with Platform() as p:
        yield p


@pytest.fixture
def env(tmp_path: Path, request: Any, platform: Platform) -> Iterator[Pages]:
    with embed_env(tmp_path, request, extra_env={"AGORA_EMBED_ORIGINS": platform.origin}) as pages:
        yield pages


def test_iframe_on_another_origin_gets_its_token_by_postmessage(env: Pages, platform: Platform) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "print(1)"}])
    token = mint(env.server, "nb", "editor", "ada")
    agora = env.server.base_url
    platform.html = PARENT.format(src=f"{agora}/embed/nb", tokens=f'["{token}"]', agora=agora).encode()
    parent = env.open("parent", platform.origin, wait_cells=False)
    frame = parent.frame_locator("#nb")
    frame.locator('.cell[data-cell="c1"] .cm-content').wait_for(timeout=15000)
    assert frame.locator(".conn").inner_text() == "connected"
    assert parent.evaluate("window.requests") == 1
    # Editing works inside the frame.
    frame.locator('.cell[data-cell="c1"] .cm-content').click()
    parent.keyboard.press("Control+End")
    parent.keyboard.insert_text("\n# from the frame 🎉")
    child = next(f for f in parent.frames if f.url.startswith(f"{agora}/embed/nb"))
    wait_until(lambda: settled(child), what="frame edit acknowledged")  # type: ignore[arg-type]
    assert server_sources(env.server, "nb")["c1"] == "print(1)\n# from the frame 🎉"
    # The token never shows in the frame's address.
    assert "token" not in child.url
    assert not env.errors, env.errors


def test_tokens_from_other_origins_are_ignored(env: Pages, platform: Platform) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "x"}])
    token = mint(env.server, "nb", "editor", "ada")
    # Opened directly (no parent): a token posted by a page of another origin must be refused.
    page = env.open("alone", f"{env.server.base_url}/embed/nb", wait_cells=False)
    page.evaluate(
        """token => window.dispatchEvent(new MessageEvent("message",
             {data: {type: "agora:token", token}, origin: "https://evil.example"}))""",
        token,
    )
    page.wait_for_timeout(500)
    assert page.evaluate("window.agora === undefined")
    assert "Waiting for a token" in page.inner_text("#app")
    # The same message from an allowed origin is taken.
    page.evaluate(
        """([token, origin]) => window.dispatchEvent(new MessageEvent("message",
             {data: {type: "agora:token", token}, origin}))""",
        [token, platform.origin],
    )
    page.wait_for_function("() => window.agora && window.agora.client.doc !== null", timeout=10000)


def test_frame_ancestors_blocks_unlisted_origins(tmp_path: Path, request: Any) -> None:
    with Platform() as other, embed_env(tmp_path, request) as env:  # no AGORA_EMBED_ORIGINS: 'self' only
        create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "x"}])
        token = mint(env.server, "nb", "editor", "ada")
        agora = env.server.base_url
        other.html = PARENT.format(src=f"{agora}/embed/nb#token={token}", tokens="[]", agora=agora).encode()
        parent = env.open("parent", other.origin, wait_cells=False)
        parent.wait_for_timeout(1500)
        child = [f for f in parent.frames if f is not parent.main_frame]
        assert child
        assert child[0].evaluate("() => window.agora === undefined")  # blocked: nothing ran
        env.errors.clear()


def test_page_headers_assets_and_docs(tmp_path: Path, request: Any) -> None:
    with embed_env(tmp_path, request, extra_env={"AGORA_EMBED_ORIGINS": "https://lms.example"}) as env:
        base = env.server.base_url
        r1 = httpx.get(f"{base}/embed/nb1")
        r2 = httpx.get(f"{base}/embed/nb1")
        assert r1.status_code == 200
        assert "set-cookie" not in r1.headers
        csp = r1.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce and f'nonce="{nonce.group(1)}"' in r1.text
        assert nonce.group(1) not in r2.headers["content-security-policy"], "a nonce must not repeat"
        assert "frame-ancestors 'self' https://lms.example" in csp
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert r1.headers["cache-control"] == "no-store"
        assert httpx.get(f"{base}/embed/bad%20id").status_code == 404
        # Hashed assets, cached forever; anything else 404.
        assets = re.findall(r'(?:href|src)="(/embed/assets/[^"]+)"', r1.text)
        assert len(assets) == 2
        for path in assets:
            a = httpx.get(f"{base}{path}")
            assert a.status_code == 200 and "immutable" in a.headers["cache-control"]
        assert httpx.get(f"{base}/embed/assets/manifest.json").status_code == 404
        assert httpx.get(f"{base}/embed/assets/..%2Fembed.py").status_code == 404
        # API docs: Swagger UI from this server, no CDN.
        docs = httpx.get(f"{base}/api/v1/docs")
        assert docs.status_code == 200
        assert "cdn" not in docs.text.lower()
        for path in re.findall(r'(?:href|src)="(/embed/assets/[^"]+)"', docs.text):
            assert httpx.get(f"{base}{path}").status_code == 200
        page = env.open("docs", f"{base}/api/v1/docs", wait_cells=False)
        page.wait_for_selector(".swagger-ui .opblock", timeout=15000)
        assert page.locator(".opblock").count() > 5


def test_token_is_refreshed_before_expiry_and_used_on_reconnect(env: Pages, platform: Platform) -> None:
    create(env.server, "nb", [{"id": "c1", "cell_type": "code", "source": "x"}])
    short = mint(env.server, "nb", "editor", "ada", ttl=62)  # expires in about a minute: refresh now
    fresh = mint(env.server, "nb", "editor", "ada", ttl=3600)
    agora = env.server.base_url
    platform.html = PARENT.format(
        src=f"{agora}/embed/nb", tokens=f'["{short}", "{fresh}"]', agora=agora
    ).encode()
    urls: list[str] = []
    parent = env.open(
        "parent",
        platform.origin,
        wait_cells=False,
        before=lambda p: p.on("websocket", lambda ws: urls.append(ws.url)),
    )
    frame = parent.frame_locator("#nb")
    frame.locator(".conn", has_text="connected").wait_for(timeout=15000)
    parent.wait_for_function("() => window.requests === 2", timeout=15000)
    assert urls and short in urls[0]
    env.server.stop()  # the open socket drops; the reconnect must carry the refreshed token
    env.server.start()
    frame.locator(".conn", has_text="connected").wait_for(timeout=30000)
    wait_until(lambda: len(urls) >= 2 and fresh in urls[-1], what="reconnect with the fresh token")
