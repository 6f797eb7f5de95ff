"""Who gets in, as which client: borrowed client ids, kicks that stick, tokens of a past notebook.

All against the real server on a loopback port, with real WebSockets.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.server_process import ServerProcess
from tests.test_sync import head_sources, make_notebook, token
from tests.wsclient import SyncClient, close_reason


def insert(seq: int, base: int, text: str) -> dict[str, Any]:
    return {"type": "op", "seq": seq, "base": base, "op": [{"t": "text", "id": "s0", "ops": [text]}]}


async def own_op_back(client: SyncClient, seq: int) -> dict[str, Any]:
    """The reply to our op `seq`: its `ops` entry (committed) or an `ack` (a duplicate)."""
    while True:
        message = await client.recv()
        if message["type"] == "ack":
            return message
        if message["type"] == "reject":
            raise AssertionError(message)
        if message["type"] == "ops":
            for entry in message["ops"]:
                if entry["client"] == client.welcome["client"] and entry["seq"] == seq:
                    return entry


async def test_a_borrowed_client_id_gets_a_fresh_one_in_every_order(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=1)
    alice_token, bob_token = await token(http, "nb", user="alice"), await token(http, "nb", user="bob")

    # 1. Alice's ops hold the id; Bob asks for it afterwards.
    async with SyncClient.connect(server.ws_url("nb", alice_token, client="one")) as alice:
        assert (await alice.start())["client"] == "one"
        await alice.send(insert(1, 0, "A1|"))
        assert (await own_op_back(alice, 1))["v"] == 1
        async with SyncClient.connect(server.ws_url("nb", bob_token, client="one")) as bob:
            assert (await bob.start())["client"] != "one"
            await bob.send(insert(2, 1, "B2|"))  # the seq alice uses next
            assert (await own_op_back(bob, 2))["v"] == 2
        await alice.send(insert(2, 2, "A2|"))
        entry = await own_op_back(alice, 2)
        assert "type" not in entry and entry["v"] == 3, f"alice's op was not applied: {entry}"

    # 2. Alice is connected with the id but has sent nothing yet; Bob asks for it.
    async with SyncClient.connect(server.ws_url("nb", alice_token, client="two")) as alice:
        await alice.start()
        async with SyncClient.connect(server.ws_url("nb", bob_token, client="two")) as bob:
            welcome = await bob.start()
            assert welcome["client"] != "two"
            await bob.send(insert(1, welcome["version"], "b|"))
            await own_op_back(bob, 1)
        await alice.send(insert(1, 4, "a|"))
        entry = await own_op_back(alice, 1)
        assert "type" not in entry, f"alice's first op was acked as bob's, not applied: {entry}"

    # 3. Resume: Bob asks for Alice's id with `since`, also after a restart (the log knows).
    for restart in (False, True):
        if restart:
            assert server.stop() == 0
            server.start()
        async with SyncClient.connect(server.ws_url("nb", bob_token, client="one", since=3)) as bob:
            welcome = await bob.start()
            assert welcome["client"] != "one" and "ops" in welcome
        async with SyncClient.connect(server.ws_url("nb", alice_token, client="one", since=3)) as alice:
            welcome = await alice.start()
            assert welcome["client"] == "one"  # its owner gets it back, and its dedupe history
            await alice.send(insert(2, 2, "A2|"))
            assert (await own_op_back(alice, 2)) == {"type": "ack", "seq": 2, "v": 3}
    text = (await head_sources(http, "nb"))["s0"]
    for mark in ("A1|", "B2|", "A2|", "b|", "a|"):
        assert text.count(mark) == 1, text


async def test_a_kick_refuses_older_tokens_until_a_new_one_is_minted(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    await make_notebook(http, "nb", cells=1)
    old = await token(http, "nb", user="mallory")
    other = await token(http, "nb", user="alice")
    async with SyncClient.connect(server.ws_url("nb", old)) as mallory:
        await mallory.start()
        assert (await http.delete("/api/v1/notebooks/nb/sessions/mallory")).status_code == 204
        assert await close_reason(mallory) == 4403
    async with SyncClient.connect(server.ws_url("nb", old)) as again:
        assert await close_reason(again) == 4403, "the kicked token got back in"
    fresh = await token(http, "nb", user="mallory")
    for restart in (False, True):
        if restart:  # the kick is in the store: it survives a restart (and a closed room)
            assert server.stop() == 0
            server.start()
        async with SyncClient.connect(server.ws_url("nb", old)) as again:
            assert await close_reason(again) == 4403
        async with SyncClient.connect(server.ws_url("nb", fresh)) as back:
            assert (await back.start())["user"]["id"] == "mallory"
        async with SyncClient.connect(server.ws_url("nb", other)) as alice:
            assert (await alice.start())["user"]["id"] == "alice"  # other users are untouched


async def test_a_token_dies_with_its_notebook(server: ServerProcess, http: httpx.AsyncClient) -> None:
    await make_notebook(http, "nb", cells=1)
    old = await token(http, "nb")
    assert (await http.delete("/api/v1/notebooks/nb")).status_code == 204
    await make_notebook(http, "nb", cells=1)
    async with SyncClient.connect(server.ws_url("nb", old)) as stale:
        assert await close_reason(stale) == 4401
    async with SyncClient.connect(server.ws_url("nb", await token(http, "nb"))) as fresh:
        await fresh.start()
        await fresh.send(insert(1, 0, "new|"))
        assert (await own_op_back(fresh, 1))["v"] == 1
    assert (await head_sources(http, "nb"))["s0"] == "new|cell 0"
