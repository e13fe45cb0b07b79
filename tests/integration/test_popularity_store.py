"""PopularityStore against the real Redis: totals, and the stream time every worker reads at."""

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from app import ranker
from app.popularity import Popularity
from app.stores.popularity import PopularityStore
from harness.services import scratch_redis

DAY = 86_400.0
NOW = 20_000 * DAY  # the wall clock, far after every event


@pytest_asyncio.fixture
async def store() -> AsyncIterator[PopularityStore]:
    async with scratch_redis() as (redis, keys):
        yield PopularityStore(redis, keys)


def increments(*events: tuple[str, float, float]) -> Popularity:
    popularity = Popularity(DAY)
    for item_id, weight, timestamp in events:
        popularity.add(item_id, weight, timestamp)
    return popularity


async def test_trending_is_read_at_the_newest_event_time_any_worker_added(store):
    await store.add(increments(("a", 1.0, 1_001 * DAY)))
    await store.add(increments(("b", 1.0, 1_000 * DAY)))  # another worker, behind

    trending = await store.trending(2, DAY, "stream", NOW)

    assert trending.as_of == 1_001 * DAY
    weights = [ranker.decayed_value(score, trending.as_of, DAY) for _, score in trending.items]
    assert [item for item, _ in trending.items] == ["a", "b"]
    assert weights == pytest.approx([1.0, 0.5])


async def test_the_stream_time_never_moves_back(store):
    await store.add(increments(("a", 1.0, 5 * DAY)))
    await store.add(increments(("a", -2.0, 4 * DAY)))  # a late return: no weight, no clock

    assert (await store.trending(1, DAY, "stream", NOW)).as_of == 5 * DAY


async def test_on_the_wall_clock_trending_is_read_at_now(store):
    await store.add(increments(("a", 1.0, 5 * DAY)))

    assert (await store.trending(1, DAY, "wall", NOW)).as_of == NOW
