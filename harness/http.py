"""What tests ask of a worker over HTTP: JSON in and out, a metric's value, and waiting for a
condition that the stream makes true a little later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
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
