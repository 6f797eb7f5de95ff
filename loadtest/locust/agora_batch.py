"""Latency samples batched into locust's statistics.

A classroom run yields a million `edit→viewer` samples a minute; firing each as a locust request
event costs ~15 µs (hooks, two stats entries, per-second counters), which was most of the load
generator's CPU and so part of the latency it measured. Here each process keeps a histogram in
locust's own buckets (`locust.stats.bucket_response_time`) and merges it into the stats entries
four times a second, with the bookkeeping `StatsEntry.log` does per sample. That reaches into
locust's `StatsEntry` fields, so locust is pinned (requirements.txt) and tests/test_locust.py
checks the counts that come out in the CSV, sample for sample.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust import events
from locust.stats import bucket_response_time

FLUSH_EVERY = 0.25


@dataclass
class Pending:
    """Samples of one metric not yet merged into locust's statistics."""

    count: int = 0
    total_ms: float = 0.0
    min_ms: float = float("inf")
    max_ms: float = 0.0
    length: int = 0
    buckets: Counter[int] = field(default_factory=Counter)


_pending: dict[str, Pending] = {}
_env: Any = None


def record(name: str, ms: float, length: int) -> None:
    """One successful sample of metric `name` (request type `WS`)."""
    p = _pending.get(name)
    if p is None:
        p = _pending[name] = Pending()
    p.count += 1
    p.total_ms += ms
    if ms < p.min_ms:
        p.min_ms = ms
    if ms > p.max_ms:
        p.max_ms = ms
    p.length += length
    p.buckets[bucket_response_time(ms)] += 1


def _merge(entry: Any, p: Pending, now: float) -> None:
    t = int(now)
    if (
        entry.use_response_times_cache
        and entry.last_request_timestamp
        and t > int(entry.last_request_timestamp)
    ):
        entry._cache_response_times(t - 1)
    entry.num_requests += p.count
    entry.num_reqs_per_sec[t] += p.count
    entry.last_request_timestamp = now
    entry.total_response_time += p.total_ms
    entry.min_response_time = (
        p.min_ms if entry.min_response_time is None else min(entry.min_response_time, p.min_ms)
    )
    entry.max_response_time = max(entry.max_response_time, p.max_ms)
    for key, n in p.buckets.items():
        entry.response_times[key] += n
    entry.total_content_length += p.length


def flush() -> None:
    """Merge every pending sample into locust's statistics now."""
    if _env is None:
        return
    now = time.time()
    stats = _env.stats
    for name in list(_pending):
        p = _pending.pop(name)
        _merge(stats.get(name, "WS"), p, now)
        _merge(stats.total, p, now)


def _flusher() -> None:
    while True:
        gevent.sleep(FLUSH_EVERY)
        flush()


@events.init.add_listener  # type: ignore[untyped-decorator]
def _on_init(environment: Any, **_: Any) -> None:
    global _env
    _env = environment


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _on_test_start(**_: Any) -> None:
    gevent.spawn(_flusher)


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _on_test_stop(**_: Any) -> None:
    flush()
