"""`engine.ot.client.ClientDoc` against the real `engine.document.Document`, random schedules."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.document import Document, Duplicate
from engine.ot.client import ClientDoc
from engine.ot.model import notebook_to_doc
from tests.test_document import notebook


def _marker_op(client: ClientDoc, rng: random.Random, n: int) -> list[dict[str, Any]]:
    cell = rng.choice(["c0", "c1"])
    source = client.notebook.cells[cell].source
    at = rng.choice([0, len(source), *[i + 1 for i, ch in enumerate(source) if ch == ">"]])
    marker = f"<{client.client}{n}>"
    if rng.random() < 0.15:
        return [{"t": "meta_set", "id": cell, "key": "k", "value": n}]
    return [{"t": "text", "id": cell, "ops": [at, marker] if at else [marker]}]


@given(st.integers(0, 2**32), st.integers(2, 4), st.integers(5, 40))
def test_clients_converge_with_the_server_under_any_delivery_order(
    seed: int, clients: int, steps: int
) -> None:
    rng = random.Random(seed)
    server = Document(notebook("", ""), 0, [])
    replicas = [ClientDoc(server.notebook, 0, f"k{i}") for i in range(clients)]
    uplink: list[deque[tuple[int, int, list[dict[str, Any]]]]] = [deque() for _ in replicas]
    downlink: list[deque[dict[str, Any]]] = [deque() for _ in replicas]
    markers: list[str] = []
    for step in range(steps * 3):
        i = rng.randrange(clients)
        action = rng.random()
        if action < 0.4 and step < steps * 2:
            op = _marker_op(replicas[i], rng, step)
            if op[0]["t"] == "text":
                markers.append(next(x for x in op[0]["ops"] if isinstance(x, str)))
            out = replicas[i].edit(op)
            if out:
                uplink[i].append(out)
        elif action < 0.7 and uplink[i]:
            seq, base, op = uplink[i].popleft()
            result = server.submit(op, base, replicas[i].client, seq, "u", step)
            assert not isinstance(result, Duplicate)
            for queue in downlink:
                queue.append(result.wire())
        elif downlink[i]:
            replicas[i].receive(downlink[i].popleft())
            out = replicas[i].next_to_send()
            if out:
                uplink[i].append(out)
    while any(uplink) or any(downlink) or not all(r.settled for r in replicas):
        for i, replica in enumerate(replicas):
            while uplink[i]:
                seq, base, op = uplink[i].popleft()
                result = server.submit(op, base, replica.client, seq, "u", 0)
                assert not isinstance(result, Duplicate)
                for queue in downlink:
                    queue.append(result.wire())
            while downlink[i]:
                replica.receive(downlink[i].popleft())
            out = replica.next_to_send()
            if out:
                uplink[i].append(out)
    expected = notebook_to_doc(server.notebook)
    for replica in replicas:
        assert replica.version == server.version
        assert notebook_to_doc(replica.notebook) == expected
    text = server.notebook.cells["c0"].source + server.notebook.cells["c1"].source
    assert all(text.count(m) == 1 for m in markers)
