"""Freshness probes, shared by the benchmarks and the drills: a user clicks their current top
item over HTTP, and the probe ends when that item has left the user's cached list in Redis (the
event was applied and the list rewritten)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
import uuid
from typing import Any

import aiohttp
from redis.asyncio import Redis

from harness.services import REDIS_URL

PROBE_LIMIT = 10.0
"""Seconds after its 202 a probe waits for the list by default; a later one counts as
infinitely late."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def probe(
    http: aiohttp.ClientSession,
    redis: Redis,
    url: str,
    prefix: str,
    user_id: str,
    retry_unavailable: bool = False,
    limit: float = PROBE_LIMIT,
) -> tuple[float, float, float] | None:
    """(seconds from the 202 to the rewritten list, seconds from the first request to it, when
    the 202 came); None when the user has no personal list to probe. A 503 fails the probe, or
    with ``retry_unavailable`` is retried after its Retry-After with the same ``event_id``, as a
    client would. A 503 does not say the event was not written (the produce may have timed out
    after the write), so a retried probe's list can change before its 202: the first figure is
    then negative."""
    key = f"{prefix}:rec:{user_id}"
    entry = json.loads(await redis.get(key) or "null")
    if not entry or entry["source"] != "personal":
        return None
    top = entry["items"][0][0]
    click = {"user_id": user_id, "item_id": top, "action": "click", "event_id": str(uuid.uuid4())}
    sent_at = time.time()
    while True:
        async with http.post(f"{url}/events", json=click) as response:
            status, retry_after = response.status, response.headers.get("Retry-After")
        if status == 202:
            break
        assert retry_unavailable and status == 503 and retry_after, (status, retry_after)
        await asyncio.sleep(float(retry_after))
    accepted_at = time.time()
    deadline = accepted_at + limit
    while time.time() < deadline:
        entry = json.loads(await redis.get(key))
        if top not in (item for item, _ in entry["items"]):
            return entry["updated_at"] - accepted_at, entry["updated_at"] - sent_at, accepted_at
        await asyncio.sleep(0.003)
    return math.inf, math.inf, accepted_at


async def probe_until_stopped(
    http: aiohttp.ClientSession,
    redis: Redis,
    url: str,
    prefix: str,
    users: list[str],
    rate: float,
    stop: asyncio.Event,
    results: list[tuple[float, float, float]],
    retry_unavailable: bool = False,
    limit: float = PROBE_LIMIT,
) -> None:
    """Probes at ``rate`` per second, cycling through ``users``, each result appended to
    ``results`` as it comes, until ``stop`` is set."""
    for user_id in itertools.cycle(users):
        if stop.is_set():
            return
        result = await probe(http, redis, url, prefix, user_id, retry_unavailable, limit)
        if result is not None:
            results.append(result)
        await asyncio.sleep(1 / rate)


PREPARE_WITHIN = 180.0
"""Seconds ``prepare`` waits for the personal lists before it fails."""


async def prepare(
    url: str,
    prefix: str,
    rows: list[dict[str, Any]],
    redis_url: str = REDIS_URL,
    within: float = PREPARE_WITHIN,
) -> None:
    """Feed events to a new worker, fit on them, and wait for every user's personal list; fails
    after ``within`` seconds naming the users without one (a worker that never applied the
    events, or a fit that never came, would otherwise keep the caller waiting for good)."""
    users = sorted({row["user_id"] for row in rows})
    redis = Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as http, contextlib.aclosing(redis):
        for start in range(0, len(rows), 1000):
            async with http.post(f"{url}/events", json={"events": rows[start : start + 1000]}):
                pass
        await asyncio.sleep(5)  # the first fit starts once data arrives; refit on all of it
        async with http.post(f"{url}/admin/retrain"):
            pass
        await asyncio.sleep(5)
        deadline = time.monotonic() + within
        while True:
            for user in users:  # a read of an older model's list re-ranks it on a coming tick
                async with http.get(f"{url}/recommend/{user}") as response:
                    await response.read()
            await asyncio.sleep(1)
            entries = [
                json.loads(await redis.get(f"{prefix}:rec:{user}") or "null") for user in users
            ]
            missing = [
                user
                for user, entry in zip(users, entries, strict=True)
                if not entry or entry["source"] != "personal"
            ]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(missing)} of {len(users)} users still had no personal list "
                    f"{within:.0f} s after the fit was requested: {missing[:5]}"
                )
