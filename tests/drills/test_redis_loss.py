"""Redis lost: a FLUSHALL, or a restart that comes back empty, on a Redis of the test's own.

Redis holds only derived state, so nothing is lost: lists, popularity and the published model
come back without anyone asking, and no read or ingestion request answers 5xx meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from harness.data import seed_history
from harness.http import eventually, get_json, post_json
from harness.services import RedisServer
from harness.worker import WorkerProcess, running_worker, worker_env

POLLED_USERS = [f"seed-a{user}" for user in range(3)]
UNPOLLED_USERS = [f"seed-{group}{user}" for group in "ab" for user in range(5, 20)]
"""Nobody asks for these users' lists: only the background refill can bring them back."""


class Traffic:
    """Clients reading and posting all along; remembers every status they got."""

    def __init__(self, http, url: str) -> None:
        self.http = http
        self.url = url
        self.answers: list[tuple[float, str, int]] = []

    async def run(self) -> None:
        paths = [f"/recommend/{user}?n=3" for user in POLLED_USERS]
        paths += ["/recommend/nobody-knows-me", "/popular?n=5", "/popular?n=5&half_life=3600"]
        paths += ["/users/seed-a1", "/similar/a1"]
        sent = 0
        while True:
            for path in paths:
                async with self.http.get(f"{self.url}{path}") as response:
                    self.answers.append((time.monotonic(), path, response.status))
            sent += 1
            event = {"user_id": "seed-a1", "item_id": f"fresh-{sent}", "action": "view"}
            status, _ = await post_json(self.http, f"{self.url}/events", event)
            self.answers.append((time.monotonic(), "POST /events", status))
            await asyncio.sleep(0.05)

    def failures(self) -> list[tuple[str, int]]:
        return [(path, status) for _, path, status in self.answers if status >= 500]

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for at, _, _ in self.answers if start <= at <= end)


@dataclass
class Deployment:
    server: RedisServer
    process: WorkerProcess
    redis: Redis

    @property
    def prefix(self) -> str:
        return self.process.redis_prefix


@pytest.fixture(scope="module")
async def deployment(tmp_path_factory, http) -> AsyncIterator[Deployment]:
    """A worker (with its trainer) on a Redis of its own, seeded until every list is personal."""
    folder = tmp_path_factory.mktemp("redis-loss")
    server = RedisServer(folder / "redis")
    server.start()
    env = worker_env(folder, RECSYS_REDIS_URL=server.url)
    try:
        with running_worker(env, folder / "worker.log") as process:
            status, _ = await post_json(http, f"{process.url}/events", {"events": seed_history()})
            assert status == 202
            redis = Redis.from_url(server.url)
            await eventually(lambda: all_lists_personal(http, process.url), within=60, interval=0.3)
            yield Deployment(server, process, redis)
            await redis.aclose()
    finally:
        server.kill()


async def all_lists_personal(http, url: str) -> bool | None:
    for user in POLLED_USERS + UNPOLLED_USERS:
        _, body = await get_json(http, f"{url}/recommend/{user}?n=3")
        if body["source"] != "personal":
            return None
    return True


async def refilled(redis: Redis, prefix: str) -> bool | None:
    """Every unpolled user's list, popularity and the published model are back in Redis."""
    try:
        lists = await asyncio.gather(*(redis.exists(f"{prefix}:rec:{u}") for u in UNPOLLED_USERS))
        popular = await redis.zcard(f"{prefix}:popular:604800")
        model = await redis.exists(f"{prefix}:model:current")
    except RedisConnectionError:  # the test's own connection, broken by the restart
        return None
    return True if all(lists) and popular >= 20 and model else None


@contextlib.asynccontextmanager
async def traffic(http, url: str) -> AsyncIterator[Traffic]:
    clients = Traffic(http, url)
    task = asyncio.create_task(clients.run())
    try:
        yield clients
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_after_flushall_lists_popularity_and_model_come_back_and_no_request_fails(
    deployment, http
):
    async with traffic(http, deployment.process.url) as clients:
        await asyncio.sleep(1)
        flushed_at = time.monotonic()
        await deployment.redis.flushall()
        await eventually(
            lambda: refilled(deployment.redis, deployment.prefix), within=30, interval=0.2
        )
        refill_seconds = time.monotonic() - flushed_at
        await asyncio.sleep(1)
    print(f"\nFLUSHALL: lists, popularity and model back in {refill_seconds:.1f} s")
    assert clients.failures() == []
    _, body = await get_json(http, f"{deployment.process.url}/recommend/{UNPOLLED_USERS[-1]}?n=3")
    assert body["source"] == "personal"


async def test_while_redis_restarts_empty_reads_answer_200_and_everything_comes_back(
    deployment, http
):
    async with traffic(http, deployment.process.url) as clients:
        await asyncio.sleep(1)
        down_at = time.monotonic()
        deployment.server.kill()
        await asyncio.sleep(3)
        deployment.server.start()  # same port, no persistence: it comes back empty
        up_at = time.monotonic()
        await eventually(
            lambda: refilled(deployment.redis, deployment.prefix), within=30, interval=0.2
        )
        refill_seconds = time.monotonic() - up_at
        await asyncio.sleep(1)
    print(
        f"\nRedis restart: {clients.answered_between(down_at, up_at)} answers while it was down, "
        f"everything back {refill_seconds:.1f} s after it came back"
    )
    assert clients.answered_between(down_at, up_at) > 0, "requests must reach the outage"
    assert clients.failures() == []


async def test_while_redis_is_down_the_worker_stays_ready_and_health_reports_it(deployment, http):
    deployment.server.kill()
    try:
        ready, readiness = await get_json(http, f"{deployment.process.url}/readyz")
        live, _ = await get_json(http, f"{deployment.process.url}/livez")
        health, body = await get_json(http, f"{deployment.process.url}/health")
    finally:
        deployment.server.start()
    await eventually(lambda: refilled(deployment.redis, deployment.prefix), within=30, interval=0.2)

    assert (ready, readiness) == (200, {"status": "ready", "recovered": True})
    assert live == 200
    assert (health, body["redis"]) == (503, False)
