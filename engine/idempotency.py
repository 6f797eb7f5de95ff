"""Idempotent HTTP writes (`Idempotency-Key`): a repeat within 24 h gets the first answer.

The first call with a key runs; its answer (status and JSON body) is kept in the store as a
record `idem:<scope>:<key>` for `KEEP_MS`, together with a fingerprint of the request. A repeat
with the same key and the same request gets that answer and runs nothing; with another request
it is refused (`idempotency_key_reused`). Concurrent calls with one key run one at a time, so a
repeat that arrives while the first is running waits for its answer. Answers with status 500 and
above are not kept (the call did not take effect: see `Room.call`), so a retry runs again.

The record is written after the call took effect: a crash in between lets a retry run again.
PUT content and revert are then harmless (they set the content to a target, which it already
has); a copy answers that the id exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from engine.errors import Invalid
from engine.storage.base import Storage, StorageError

log = logging.getLogger("agora.idempotency")

KEEP_MS = 24 * 3600 * 1000

Answer = tuple[int, Any]  # (HTTP status, JSON body)


class Idempotency:
    """Runs keyed calls at most once per key and remembers their answers in the store."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._running: dict[str, trio.Event] = {}  # one entry per key in flight

    async def run(
        self, scope: str, key: str, fingerprint: str, call: Callable[[], Awaitable[Answer]]
    ) -> tuple[Answer, bool]:
        """`(answer, replayed)`: the kept answer of an earlier call with this key (replayed), or
        `call()`'s. `Invalid` code `idempotency_key_reused` when the key was used for another
        request. Storage errors while reading propagate (`StorageError`)."""
        record = f"idem:{scope}:{key}"
        while (running := self._running.get(record)) is not None:
            await running.wait()
        done = self._running[record] = trio.Event()
        try:
            raw = await self.storage.get_record(record, _now_ms())
            if raw is not None:
                kept = orjson.loads(raw)
                if kept["f"] != fingerprint:
                    raise Invalid(
                        "this Idempotency-Key was used for another request", code="idempotency_key_reused"
                    )
                return (int(kept["s"]), kept["b"]), True
            status, body = await call()
            if status < 500:
                value = orjson.dumps({"f": fingerprint, "s": status, "b": body})
                try:
                    await self.storage.put_record(record, value, _now_ms() + KEEP_MS)
                except StorageError as exc:
                    log.warning("answer of %s not kept: %s", record, exc.message)
            return (status, body), False
        finally:
            del self._running[record]
            done.set()


def _now_ms() -> int:
    return int(time.time() * 1000)
