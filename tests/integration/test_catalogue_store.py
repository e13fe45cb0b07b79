"""CatalogueStore against the real Redis: records, availability and the version counter."""

from collections.abc import AsyncIterator

import pytest_asyncio

from app.models import ItemRecord
from app.stores.catalogue import SCAN_CHUNK, CatalogueStore
from harness.services import scratch_redis


@pytest_asyncio.fixture
async def store() -> AsyncIterator[CatalogueStore]:
    async with scratch_redis() as (redis, keys):
        yield CatalogueStore(redis, keys)


async def test_a_stored_record_is_read_back_whole(store):
    record = ItemRecord("i1", "Red shoes", "Light", ("Shoes",), ("red", "trail"), True)
    await store.put([record])
    assert await store.get("i1") == record


async def test_an_unknown_item_reads_as_none(store):
    assert await store.get("nope") is None


async def test_a_new_record_replaces_the_stored_one(store):
    await store.put([ItemRecord("i1", title="old")])
    await store.put([ItemRecord("i1", title="new")])
    assert await store.get("i1") == ItemRecord("i1", title="new")


async def test_of_two_records_with_one_id_in_a_put_the_later_wins(store):
    await store.put([ItemRecord("i1", available=False), ItemRecord("i1", title="later")])
    assert (await store.get("i1"), await store.unavailable()) == (
        ItemRecord("i1", title="later"),
        set(),
    )


async def test_all_returns_every_record_once_across_scan_chunks(store):
    records = [ItemRecord(f"item-{n}", title=f"title {n}") for n in range(2 * SCAN_CHUNK + 500)]
    await store.put(records)
    stored = await store.all()
    assert len(stored) == len(records)
    assert set(stored) == set(records)


async def test_the_unavailable_set_follows_the_latest_record(store):
    await store.put([ItemRecord("i1", available=False), ItemRecord("i2", available=False)])
    await store.put([ItemRecord("i1", available=True)])
    assert await store.unavailable() == {"i2"}


async def test_each_put_bumps_the_version_by_one_and_returns_it(store):
    assert await store.version() == 0
    assert await store.put([ItemRecord("i1")]) == 1
    assert await store.put([ItemRecord("i2"), ItemRecord("i3")]) == 2
    assert await store.version() == 2


async def test_an_empty_put_leaves_the_version_unchanged(store):
    await store.put([ItemRecord("i1")])
    assert await store.put([]) == 1
    assert await store.version() == 1


async def test_all_keys_live_under_the_prefix(store):
    await store.put([ItemRecord("i1", available=False)])
    matching = store.redis.scan_iter(match=f"{store.keys.prefix}:*", count=10_000)
    keys = {key.decode() async for key in matching}
    assert keys == {store.keys.items, store.keys.unavailable_items, store.keys.catalogue_version}
