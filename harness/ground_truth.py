"""Ground truth for a stream: reproducible events, the state each user must end up with
(computed here, not by the app), and comparing it with what ``GET /users/{id}`` shows."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import defaultdict
from typing import Any

import aiohttp

from app.actions import summed_weight
from app.settings import Settings
from app.state_codec import as_float32, whole_seconds

ACTIONS = ("view", "view", "view", "click", "click", "purchase", "return", "share")


def random_events(count: int, users: range, items: int, seed: int) -> list[dict[str, Any]]:
    """A reproducible stream over these users, every action kind, explicit past timestamps."""
    rng = random.Random(seed)
    now = time.time()
    return [
        {
            "user_id": f"user-{rng.choice(users)}",
            "item_id": f"item-{rng.randrange(items)}",
            "action": rng.choice(ACTIONS),
            "timestamp": round(now - rng.uniform(60, 30 * 24 * 3600), 3),
        }
        for _ in range(count)
    ]


def expected_states(events: list[dict[str, Any]], settings: Settings) -> dict[str, dict[str, Any]]:
    """Ground truth: each user's state as ``GET /users/{id}`` must show it, computed here.

    Item weights are float32 sums and item times whole seconds, as the state keeps them
    (:mod:`app.state_codec`). The streams used have fewer items per user than the item cap.
    """
    states: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"event_count": 0, "last_event_at": 0.0, "interactions": {}}
    )
    for event in events:
        state = states[event["user_id"]]
        state["event_count"] += 1
        state["last_event_at"] = max(state["last_event_at"], event["timestamp"])
        entry = state["interactions"].setdefault(
            event["item_id"], {"weight": 0.0, "count": 0, "last_at": 0.0}
        )
        entry["weight"] = as_float32(
            summed_weight(entry["weight"], settings.weight(event["action"]))
        )
        entry["count"] += 1
        entry["last_at"] = max(entry["last_at"], whole_seconds(event["timestamp"]))
    return dict(states)


async def read_states(
    http: aiohttp.ClientSession, url: str, users: list[str], concurrency: int = 16
) -> dict[str, dict[str, Any] | None]:
    """Every listed user's ``GET /users/{id}`` body (None for a 404)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(user_id: str) -> tuple[str, dict[str, Any] | None]:
        async with limit, http.get(f"{url}/users/{user_id}") as response:
            if response.status == 404:
                return user_id, None
            assert response.status == 200, await response.text()
            body = await response.json()
            return user_id, {
                key: body[key] for key in ("event_count", "last_event_at", "interactions")
            }

    return dict(await asyncio.gather(*(one(user_id) for user_id in users)))


def count_differences(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any] | None]
) -> tuple[int, int]:
    """(events missing, events counted twice or more), summed over every user and item."""
    missing = extra = 0
    for user_id, truth in expected.items():
        state = actual.get(user_id) or {"interactions": {}}
        for item_id, entry in truth["interactions"].items():
            got = state["interactions"].get(item_id, {"count": 0})["count"]
            missing += max(0, entry["count"] - got)
            extra += max(0, got - entry["count"])
        for item_id, entry in state["interactions"].items():
            if item_id not in truth["interactions"]:
                extra += entry["count"]
    return missing, extra


def _close(got: float, want: float, tolerance: float) -> bool:
    return math.isclose(got, want, rel_tol=0.0, abs_tol=tolerance)


def states_equal(expected: dict[str, Any], actual: dict[str, Any] | None) -> bool:
    """Counts exactly, times up to 1 µs and weights up to float rounding (1e-9)."""
    if actual is None or actual["event_count"] != expected["event_count"]:
        return False
    if not _close(actual["last_event_at"], expected["last_event_at"], 1e-6):
        return False
    if set(actual["interactions"]) != set(expected["interactions"]):
        return False
    return all(
        got["count"] == want["count"]
        and _close(got["weight"], want["weight"], 1e-9)
        and _close(got["last_at"], want["last_at"], 1e-6)
        for item_id, want in expected["interactions"].items()
        for got in [actual["interactions"][item_id]]
    )


async def wait_for_ground_truth(
    http: aiohttp.ClientSession,
    url: str,
    expected: dict[str, dict[str, Any]],
    within: float,
    interval: float,
) -> float:
    """Seconds until every user's state equals the ground truth. Otherwise an AssertionError
    says how many events are missing and how many were counted more than once."""
    started = time.monotonic()
    users = sorted(expected)
    while True:
        actual = await read_states(http, url, users)
        if all(states_equal(expected[user], actual[user]) for user in users):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            break
        await asyncio.sleep(interval)
    missing, extra = count_differences(expected, actual)
    raise AssertionError(
        f"state differs from ground truth after {within} s: {missing} events missing, {extra} extra"
    )
