"""The HTTP API (contract §2), route by route, over real HTTP against the real server
(`server.py` started by the `server` fixture of tests/conftest.py): success and every failure
status, the auth matrix, content round trips, bulk copies, history paging and revert.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
import trio

from engine.auth.keys import KeyStore
from engine.auth.tokens import verify_token
from tests.server_process import ServerProcess

DATA = Path(__file__).parent / "data" / "notebooks"
MAX_BODY = 32 * 1024 * 1024  # the server's default limit (contract §8)

Resp = httpx.Response
Client = httpx.AsyncClient


@pytest.fixture
async def api(http: httpx.AsyncClient) -> Client:
    return http


def anon(server: ServerProcess, key: str | None = None) -> Client:
    """A client with `key` (or no Authorization header at all)."""
    headers = {"Authorization": f"Bearer {key}".strip()} if key is not None else {}
    return httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30)


# ---- helpers ---------------------------------------------------------------------------------


def assert_error(resp: Resp, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.content[:500]
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["code"].replace("_", "").isalpha() and body["error"]["code"].islower()
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_bytes())


def small_nb(*sources: str) -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    for i, src in enumerate(sources):
        cell = nbformat.v4.new_code_cell(src) if i % 2 == 0 else nbformat.v4.new_markdown_cell(src)
        cell["id"] = f"cell-{i}"
        nb.cells.append(cell)
    return json.loads(nbformat.writes(nb))


def normalise(nb: dict[str, Any]) -> dict[str, Any]:
    """nbformat's reading normalisation: upgrade to v4, join line lists, drop transient keys;
    plus Agora's: CRLF/CR in sources become LF. Cell ids are compared separately."""
    node = nbformat.reads(json.dumps(nb), as_version=4)
    cells = []
    for cell in node.cells:
        meta = dict(cell.metadata)
        meta.pop("trusted", None)
        item = {
            "cell_type": cell.cell_type,
            "source": cell.source.replace("\r\n", "\n").replace("\r", "\n"),
            "metadata": meta,
        }
        if cell.cell_type == "code":
            item["execution_count"] = cell.execution_count
            item["n_outputs"] = len(cell.outputs)
            item["output_types"] = [o.output_type for o in cell.outputs]
        cells.append(item)
    meta = dict(node.metadata)
    for k in ("orig_nbformat", "orig_nbformat_minor", "signature"):
        meta.pop(k, None)
    return {"metadata": meta, "cells": cells}


async def create(api: Client, **body: Any) -> dict[str, Any]:
    resp = await api.post("/api/v1/notebooks", json=body)
    assert resp.status_code == 201, resp.content
    return resp.json()


# ---- operations ------------------------------------------------------------------------------


async def test_healthz_and_metrics_need_no_key(server: ServerProcess) -> None:
    async with anon(server) as client:
        resp = await client.get("/healthz")
        assert resp.status_code == 200
        host_id = f"{socket.gethostname()}:{server.port}"  # the default --host-id
        assert resp.json() == {"status": "ok", "host": host_id} and resp.headers["X-Agora-Host"] == host_id
        resp = await client.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"agora_ops_committed_total" in resp.content


async def test_openapi_is_public_and_valid(server: ServerProcess) -> None:
    async with anon(server) as client:
        await _check_openapi(client)


async def _check_openapi(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    import openapi_spec_validator as validator
    validator.validate(doc)
    paths = doc["paths"]
    expected = {
        ("post", "/api/v1/notebooks"),
        ("get", "/api/v1/notebooks"),
        ("get", "/api/v1/notebooks/{notebook_id}"),
        ("delete", "/api/v1/notebooks/{notebook_id}"),
        ("get", "/api/v1/notebooks/{notebook_id}/content"),
        ("put", "/api/v1/notebooks/{notebook_id}/content"),
        ("post", "/api/v1/notebooks/{notebook_id}/copy"),
        ("post", "/api/v1/notebooks/{notebook_id}/copies"),
        ("get", "/api/v1/notebooks/{notebook_id}/history"),
        ("post", "/api/v1/notebooks/{notebook_id}/revert"),
        ("get", "/api/v1/notebooks/{notebook_id}/sessions"),
        ("delete", "/api/v1/notebooks/{notebook_id}/sessions/{user_id}"),
        ("post", "/api/v1/tokens"),
        ("get", "/healthz"),
        ("get", "/metrics"),
    }
    assert expected <= {(m, p) for p, item in paths.items() for m in item}
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert doc["security"] == [{"apiKey": []}]
    assert paths["/healthz"]["get"]["security"] == []
    for path, item in paths.items():
        if path.startswith("/api/v1/"):
            for op in item.values():
                assert "401" in op["responses"], (path, op)
    assert "422" in paths["/api/v1/tokens"]["post"]["responses"]
    assert "204" in paths["/api/v1/notebooks/{notebook_id}"]["delete"]["responses"]
    resp = await client.get("/api/v1/docs")
    assert resp.status_code == 200 and b"openapi.json" in resp.content


# ---- auth ------------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/api/v1/notebooks"),
    ("GET", "/api/v1/notebooks"),
    ("GET", "/api/v1/notebooks/nb"),
    ("DELETE", "/api/v1/notebooks/nb"),
    ("GET", "/api/v1/notebooks/nb/content"),
    ("PUT", "/api/v1/notebooks/nb/content"),
    ("POST", "/api/v1/notebooks/nb/copy"),
    ("POST", "/api/v1/notebooks/nb/copies"),
    ("GET", "/api/v1/notebooks/nb/history"),
    ("POST", "/api/v1/notebooks/nb/revert"),
    ("GET", "/api/v1/notebooks/nb/sessions"),
    ("DELETE", "/api/v1/notebooks/nb/sessions/u1"),
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/no-such-route"),
]


async def _status_within(client: Client, status: int, seconds: float) -> bool:
    """Whether GET /api/v1/notebooks answers `status` within `seconds` (polling)."""
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        if (await client.get("/api/v1/notebooks")).status_code == status:
            return True
        await trio.sleep(0.05)
    return False


async def test_auth_matrix(server: ServerProcess, api: Client) -> None:
    await create(api, id="nb")
    # A key made by `agora keys create` in another process works within a second, and stops
    # working within a second of `agora keys revoke`.
    store = KeyStore(server.data_dir, [])
    key_id, stored_key = store.create("lms")
    async with anon(server, stored_key) as client:
        # Promised within a second; waited for up to 15 s (a tenfold margin on a busy machine).
        assert await _status_within(client, 200, seconds=15)
        store.revoke(key_id)
        assert await _status_within(client, 401, seconds=15)
    for who, key in {
        "no key": None,
        "wrong key": "not-a-key",
        "revoked key": stored_key,
        "empty": "",
    }.items():
        async with anon(server, key) as client:
            for method, path in ROUTES:
                resp = await client.request(method, path, json={})
                err = assert_error(resp, 401, "unauthorized")
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), (who, method, path, err)
            basic = await client.get(
                "/api/v1/notebooks", headers={"Authorization": f"Basic {server.api_key}"}
            )
            assert_error(basic, 401, "unauthorized")
    # Nothing was changed by the refused calls.
    assert (await api.get("/api/v1/notebooks/nb")).json()["version"] == 0
    assert [i["id"] for i in (await api.get("/api/v1/notebooks")).json()["items"]] == ["nb"]


# ---- notebooks: create / list / get / delete -------------------------------------------------


async def test_create_empty_and_named(api: Client) -> None:
    body = await create(api)
    assert set(body) == {"id", "name", "version", "created", "updated"}
    assert body["version"] == 0
    assert abs(body["created"] - time.time() * 1000) < 60_000
    body = await create(api, id="hand-out_1", name="Week 1")
    assert body["id"] == "hand-out_1" and body["name"] == "Week 1"
    content = await api.get("/api/v1/notebooks/hand-out_1/content")
    assert content.json()["cells"] == []
    nbformat.validate(nbformat.from_dict(content.json()))


async def test_create_conflict_and_invalid(api: Client) -> None:
    await create(api, id="dup")
    assert_error(await api.post("/api/v1/notebooks", json={"id": "dup"}), 409, "notebook_exists")
    for bad in ["", "a/b", "a b", "x" * 65, "é", "a.b"]:
        assert_error(await api.post("/api/v1/notebooks", json={"id": bad}), 422, "invalid_field")
    assert_error(await api.post("/api/v1/notebooks", json={"id": 5}), 422, "invalid_field")
    assert_error(await api.post("/api/v1/notebooks", json={"name": ["x"]}), 422, "invalid_field")
    err = assert_error(await api.post("/api/v1/notebooks", json={"nmae": "typo"}), 422, "invalid_field")
    assert "nmae" in err["message"]
    assert_error(await api.post("/api/v1/notebooks", json={"notebook": "text"}), 422, "invalid_field")
    assert_error(
        await api.post("/api/v1/notebooks", json={"notebook": {"cells": 1}}), 422, "invalid_notebook"
    )
    bad_nb = load("hf_diffusers_training_example_invalid.ipynb")
    resp = await api.post("/api/v1/notebooks", json={"notebook": bad_nb})
    assert resp.status_code in (201, 422)  # the importer may repair Colab's extra keys
    if resp.status_code == 422:
        assert_error(resp, 422, "invalid_notebook")


async def test_malformed_bodies(api: Client) -> None:
    for raw in [b"{", b"{'a': 1}", b"\xff\xfe", b"[1,", b'{"id": "x",}', b"NaN"]:
        assert_error(await api.post("/api/v1/notebooks", content=raw), 400, "malformed_json")
    for raw in [b"[]", b"1", b'"x"', b"null", b"true"]:
        assert_error(await api.post("/api/v1/notebooks", content=raw), 400, "bad_request")
    # Content-Type is not required (curl -d sends a form type).
    resp = await api.post(
        "/api/v1/notebooks",
        content=b'{"id": "ct"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 201
    # An empty body means {}.
    assert (await api.post("/api/v1/notebooks", content=b"")).status_code == 201


async def test_oversized_body_is_413(api: Client) -> None:
    big = {"notebook": small_nb("x" * (MAX_BODY + 10))}
    err = assert_error(await api.post("/api/v1/notebooks", json=big), 413, "payload_too_large")
    assert str(MAX_BODY) in err["message"]
    await create(api, id="target")
    resp = await api.put("/api/v1/notebooks/target/content", json=big)
    assert_error(resp, 413, "payload_too_large")


async def test_list_pagination(api: Client) -> None:
    ids = [f"nb{i:02d}" for i in range(7)]
    for nid in reversed(ids):
        await create(api, id=nid)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        resp = await api.get("/api/v1/notebooks", params=params)
        assert resp.status_code == 200
        body = resp.json()
        assert set(body) == {"items", "next_cursor"}
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    default = (await api.get("/api/v1/notebooks")).json()
    assert [i["id"] for i in default["items"]] == ids and default["next_cursor"] is None
    for bad in ["0", "501", "abc", "-1", "1.5"]:
        assert_error(await api.get("/api/v1/notebooks", params={"limit": bad}), 422, "invalid_field")


async def test_get_summary(api: Client) -> None:
    await create(api, id="nb", name="N")
    resp = await api.get("/api/v1/notebooks/nb")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == "nb" and body["name"] == "N" and body["version"] == 0
    assert body["connections"] == {"viewers": 0, "editors": 0}
    assert body["kernel"] == {"state": "none", "name": None}
    assert_error(await api.get("/api/v1/notebooks/missing"), 404, "notebook_not_found")
    assert_error(await api.get("/api/v1/notebooks/" + "x" * 65), 404, "notebook_not_found")
    assert_error(await api.get("/api/v1/notebooks/bad%20id"), 404, "notebook_not_found")


async def test_delete(api: Client) -> None:
    await create(api, id="gone")
    resp = await api.delete("/api/v1/notebooks/gone")
    assert resp.status_code == 204 and resp.content == b""
    assert_error(await api.get("/api/v1/notebooks/gone"), 404)
    assert_error(await api.delete("/api/v1/notebooks/gone"), 404)
    assert_error(await api.delete("/api/v1/notebooks/in.valid"), 404)


async def test_method_not_allowed_and_unknown_route(api: Client) -> None:
    resp = await api.request("PATCH", "/api/v1/notebooks")
    assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"] and "POST" in resp.headers["Allow"]
    assert_error(await api.get("/api/v1/nothing/here"), 404, "not_found")


# ---- content ---------------------------------------------------------------------------------

ROUND_TRIP = [
    "ipython7_tiny_other.ipynb",
    "hf_sagemaker_deploy_tiny_v45.ipynb",
    "nbformat3_ipython2_running_code.ipynb",
    "ipywidgets_widget_list_crlf.ipynb",
    "pythonfreecourse_hebrew_builtins.ipynb",
    "paddle_d2l_zh_rcnn_attachments.ipynb",
    "irkernel_demo.ipynb",
]


@pytest.mark.parametrize("name", ROUND_TRIP)
async def test_content_round_trip(api: Client, name: str) -> None:
    original = load(name)
    body = await create(api, notebook=original)
    resp = await api.get(f"/api/v1/notebooks/{body['id']}/content")
    assert resp.status_code == 200
    assert resp.headers["X-Agora-Version"] == "0"
    got = resp.json()
    assert (got["nbformat"], got["nbformat_minor"]) == (4, 5)
    nbformat.validate(nbformat.from_dict(got))
    assert normalise(got) == normalise(original)
    if original.get("nbformat_minor", 0) >= 5 and original["nbformat"] == 4:
        assert [c["id"] for c in got["cells"]] == [c["id"] for c in original["cells"]]


async def test_put_content_and_versions(api: Client) -> None:
    await create(api, id="nb", notebook=small_nb("a = 1"))
    v1 = small_nb("a = 2", "# Title")
    resp = await api.put("/api/v1/notebooks/nb/content", json={"notebook": v1})
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == "nb" and body["version"] >= 1
    head = body["version"]
    got = await api.get("/api/v1/notebooks/nb/content")
    assert got.headers["X-Agora-Version"] == str(head)
    assert normalise(got.json()) == normalise(v1)
    old = await api.get("/api/v1/notebooks/nb/content", params={"version": 0})
    assert old.status_code == 200 and old.headers["X-Agora-Version"] == "0"
    assert [c["source"] for c in old.json()["cells"]] == ["a = 1"]
    # Stale base_version → 409, current one → 200.
    stale = await api.put("/api/v1/notebooks/nb/content", json={"notebook": small_nb("x"), "base_version": 0})
    assert_error(stale, 409, "version_conflict")
    fresh = await api.put(
        "/api/v1/notebooks/nb/content", json={"notebook": small_nb("y"), "base_version": head}
    )
    assert fresh.status_code == 200 and fresh.json()["version"] > head
    # Failures.
    assert_error(await api.get("/api/v1/notebooks/nb/content", params={"version": 10_000}), 404)
    for bad in ["-1", "x"]:
        assert_error(
            await api.get("/api/v1/notebooks/nb/content", params={"version": bad}), 422, "invalid_field"
        )
    assert_error(await api.get("/api/v1/notebooks/missing/content"), 404, "notebook_not_found")
    assert_error(await api.put("/api/v1/notebooks/nb/content", json={}), 422, "invalid_field")
    assert_error(
        await api.put("/api/v1/notebooks/nb/content", json={"notebook": {}}), 422, "invalid_notebook"
    )
    resp = await api.put(
        "/api/v1/notebooks/nb/content", json={"notebook": small_nb("z"), "base_version": "1"}
    )
    assert_error(resp, 422, "invalid_field")
    assert_error(
        await api.put("/api/v1/notebooks/missing/content", json={"notebook": small_nb("z")}),
        404,
        "notebook_not_found",
    )
    assert_error(await api.put("/api/v1/notebooks/nb/content", content=b"{oops"), 400, "malformed_json")


# ---- copies ----------------------------------------------------------------------------------


async def test_copy(api: Client) -> None:
    await create(api, id="src", name="Handout", notebook=small_nb("print(1)"))
    resp = await api.post("/api/v1/notebooks/src/copy", json={"id": "c1", "name": "Copy"})
    assert resp.status_code == 201
    assert resp.json()["id"] == "c1" and resp.json()["name"] == "Copy" and resp.json()["version"] == 0
    content = (await api.get("/api/v1/notebooks/c1/content")).json()
    assert [c["source"] for c in content["cells"]] == ["print(1)"]
    generated = await api.post("/api/v1/notebooks/src/copy", json={})
    assert generated.status_code == 201 and generated.json()["id"] not in ("src", "c1")
    assert_error(await api.post("/api/v1/notebooks/src/copy", json={"id": "c1"}), 409, "notebook_exists")
    assert_error(await api.post("/api/v1/notebooks/missing/copy", json={"id": "c2"}), 404)
    assert_error(await api.post("/api/v1/notebooks/src/copy", json={"id": "bad id"}), 422, "invalid_field")


async def test_bulk_copy_to_30_students(api: Client) -> None:
    await create(api, id="hw1", notebook=small_nb("x = 1", "Answer below"))
    targets = [{"id": f"hw1-student{i:02d}", "name": f"Student {i}"} for i in range(30)]
    resp = await api.post("/api/v1/notebooks/hw1/copies", json={"targets": targets})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert results == [{"id": t["id"], "status": "created"} for t in targets]
    for t in targets[:3]:
        body = (await api.get(f"/api/v1/notebooks/{t['id']}")).json()
        assert body["name"] == t["name"]
    # Again, plus one new: the existing ones report "exists".
    again = await api.post("/api/v1/notebooks/hw1/copies", json={"targets": [*targets[:2], {"id": "late"}]})
    assert [r["status"] for r in again.json()["results"]] == ["exists", "exists", "created"]
    listed = (await api.get("/api/v1/notebooks", params={"limit": 500})).json()["items"]
    assert len(listed) == 32
    assert_error(await api.post("/api/v1/notebooks/missing/copies", json={"targets": targets}), 404)
    assert_error(await api.post("/api/v1/notebooks/hw1/copies", json={"targets": []}), 422, "invalid_field")
    # A bad target is that target's error, never the batch's.
    mixed_targets = [{"id": "a b"}, {}, {"id": "ok"}]
    mixed = await api.post("/api/v1/notebooks/hw1/copies", json={"targets": mixed_targets})
    assert mixed.status_code == 200
    assert [(r["status"], r.get("error", {}).get("code")) for r in mixed.json()["results"]] == [
        ("error", "invalid_id"),
        ("error", "invalid_id"),
        ("created", None),
    ]
    assert_error(await api.post("/api/v1/notebooks/hw1/copies", json={}), 422)


# ---- history and revert ----------------------------------------------------------------------


async def test_history_paging_and_revert(api: Client) -> None:
    await create(api, id="nb", notebook=small_nb("v0"))
    for i in range(1, 6):
        resp = await api.put("/api/v1/notebooks/nb/content", json={"notebook": small_nb(f"v{i}")})
        assert resp.status_code == 200
    head = (await api.get("/api/v1/notebooks/nb")).json()["version"]
    all_items = (await api.get("/api/v1/notebooks/nb/history")).json()
    assert all_items["next_since"] is None
    assert [i["v"] for i in all_items["items"]] == list(range(1, head + 1))
    item = all_items["items"][0]
    assert set(item) == {"v", "client", "seq", "user", "time", "op"}
    assert item["user"] == "api" and isinstance(item["op"], list)
    # Page through two at a time.
    got: list[int] = []
    since = 0
    while True:
        page = (await api.get("/api/v1/notebooks/nb/history", params={"since": since, "limit": 2})).json()
        got += [i["v"] for i in page["items"]]
        if page["next_since"] is None:
            break
        assert page["next_since"] == page["items"][-1]["v"]
        since = page["next_since"]
    assert got == list(range(1, head + 1))
    beyond = (await api.get("/api/v1/notebooks/nb/history", params={"since": head})).json()
    assert beyond == {"items": [], "next_since": None}
    for params in [{"limit": 0}, {"limit": 1001}, {"since": -1}, {"since": "x"}]:
        assert_error(await api.get("/api/v1/notebooks/nb/history", params=params), 422, "invalid_field")
    assert_error(await api.get("/api/v1/notebooks/missing/history"), 404)

    # Revert to version 0: head content equals v0's, history grows.
    v0 = (await api.get("/api/v1/notebooks/nb/content", params={"version": 0})).json()
    resp = await api.post("/api/v1/notebooks/nb/revert", json={"version": 0})
    assert resp.status_code == 200
    assert resp.json()["version"] > head
    now = (await api.get("/api/v1/notebooks/nb/content")).json()
    assert now["cells"] == v0["cells"]
    assert_error(await api.post("/api/v1/notebooks/nb/revert", json={"version": 10_000}), 404)
    assert_error(await api.post("/api/v1/notebooks/nb/revert", json={"version": -1}), 422)
    assert_error(await api.post("/api/v1/notebooks/nb/revert", json={}), 422)
    assert_error(await api.post("/api/v1/notebooks/nb/revert", json={"version": "1"}), 422)
    assert_error(await api.post("/api/v1/notebooks/missing/revert", json={"version": 0}), 404)


# ---- sessions --------------------------------------------------------------------------------


async def test_sessions_and_kick(api: Client) -> None:
    await create(api, id="nb")
    resp = await api.get("/api/v1/notebooks/nb/sessions")
    assert resp.status_code == 200 and resp.json() == {"viewers": 0, "editors": []}
    resp = await api.delete("/api/v1/notebooks/nb/sessions/student-7")
    assert resp.status_code == 204 and resp.content == b""
    assert_error(await api.get("/api/v1/notebooks/missing/sessions"), 404)
    assert_error(await api.delete("/api/v1/notebooks/missing/sessions/u"), 404)


# ---- tokens ----------------------------------------------------------------------------------


async def test_tokens(server: ServerProcess, api: Client) -> None:
    secret = server.secret.encode()
    await create(api, id="nb")
    user = {"id": "student-7", "name": "Ada", "color": "#e91e63"}
    before = int(time.time())
    resp = await api.post("/api/v1/tokens", json={"notebook": "nb", "user": user, "role": "editor"})
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"token", "expires", "embed_url"}
    assert before + 3600 <= body["expires"] <= int(time.time()) + 3600
    assert body["embed_url"] == f"{server.base_url}/embed/nb#token={body['token']}"
    claims = verify_token(secret, body["token"], now=time.time())
    assert (claims.notebook, claims.role, claims.user) == ("nb", "editor", user)
    short = await api.post(
        "/api/v1/tokens", json={"notebook": "nb", "user": {"id": "v"}, "role": "viewer", "ttl": 86400}
    )
    assert short.status_code == 201
    assert verify_token(secret, short.json()["token"], now=time.time()).user == {"id": "v", "name": "v"}
    bad_bodies = [
        {"notebook": "nb", "user": user, "role": "editor", "ttl": 86401},
        {"notebook": "nb", "user": user, "role": "editor", "ttl": 0},
        {"notebook": "nb", "user": user, "role": "editor", "ttl": "60"},
        {"notebook": "nb", "user": user, "role": "owner"},
        {"notebook": "nb", "user": {"name": "no id"}, "role": "viewer"},
        {"notebook": "nb", "user": {"id": 7}, "role": "viewer"},
        {"notebook": "nb", "user": {"id": ""}, "role": "viewer"},
        {"notebook": "nb", "role": "viewer"},
        {"notebook": "bad id", "user": user, "role": "viewer"},
        {"user": user, "role": "viewer"},
    ]
    for bad in bad_bodies:
        assert_error(await api.post("/api/v1/tokens", json=bad), 422, "invalid_field")
    missing = await api.post("/api/v1/tokens", json={"notebook": "missing", "user": user, "role": "viewer"})
    assert_error(missing, 404, "notebook_not_found")
