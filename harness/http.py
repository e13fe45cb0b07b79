"""What tests ask of a worker over HTTP: JSON in and out, a metric's value, waiting for a
condition that the stream makes true a little later, and posts all along a drill, retried as a
client would."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], within: float, interval: float = 0.02
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def get_metric(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` (with these labels) at the worker's ``/metrics``."""
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def lag_by_partition(http: aiohttp.ClientSession, url: str, topic: str) -> dict[str, float]:
    """The consumer lag a worker reports for each partition of a topic it owns."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return {
        sample.labels["partition"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "recsys_consumer_lag_records" and sample.labels["topic"] == topic
    }


@dataclass
class Answer:
    """One answer to a post of :func:`post_all_along`."""

    index: int
    sent_at: float
    answered_at: float
    status: int
    retry_after: str | None


async def post_all_along(
    http: aiohttp.ClientSession,
    url: str,
    body: Callable[[int], Any],
    interval: float,
    answers: list[Answer],
    retry_cap: float = math.inf,
    count: int | None = None,
) -> None:
    """POST ``body(index)`` to ``url`` for index 0, 1, ... every ``interval`` seconds, until
    cancelled or ``count`` posts were started. Posts do not wait for each other. A ``503`` is
    retried with the same body after its Retry-After (at most ``retry_cap`` seconds), as a
    client would, until answered otherwise; every answer is appended to ``answers`` (times from
    ``time.monotonic``). Once cancelled, the posts under way finish their retries first."""

    async def post(index: int) -> None:
        while True:
            sent_at = time.monotonic()
            async with http.post(url, json=body(index)) as response:
                retry_after = response.headers.get("Retry-After")
                answers.append(
                    Answer(index, sent_at, time.monotonic(), response.status, retry_after)
                )
            if response.status != 503:
                return
            await asyncio.sleep(min(float(retry_after or 1), retry_cap))

    posts: list[asyncio.Task[None]] = []
    try:
        for index in itertools.count() if count is None else range(count):
            posts.append(asyncio.create_task(post(index)))
            await asyncio.sleep(interval)
    finally:
        await asyncio.gather(*posts)
