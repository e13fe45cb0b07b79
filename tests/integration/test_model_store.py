"""ModelStore against the real Redis: snapshots, deltas and what a worker reads of them."""

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest_asyncio

from app import ranker
from app.stores.model import (
    KEPT_VERSIONS,
    ModelStore,
    Published,
    decode_user_factors,
    encode_delta,
    encode_model,
    encode_user_factors,
)
from harness.services import scratch_redis

PARAMS = ranker.AlsParams(factors=4, iterations=2, threads=1)


@pytest_asyncio.fixture
async def store() -> AsyncIterator[ModelStore]:
    async with scratch_redis() as (redis, keys):
        yield ModelStore(redis, keys)


class CountingOffload:
    """ModelStore.sync's offload, recording how many delta blobs each call decoded."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, int]] = []  # (snapshot read, deltas read)

    async def __call__(self, function, held, snapshot, blob, deltas) -> Published:
        self.calls.append((blob is not None, len(deltas)))
        return await asyncio.to_thread(function, held, snapshot, blob, deltas)


USERS = ["u1", "u2", "u3"]


async def publish_snapshot(store: ModelStore) -> ranker.FactorModel:
    """A fit of three users published with their factors."""
    version = await store.next_version()
    rows = [{"a": 1.0, "b": 2.0}, {"b": 1.0, "c": 1.0}, {"a": 2.0, "c": 1.0}]
    item_ids, matrix = ranker.interaction_matrix(rows)
    model, users = ranker.fit_matrix(item_ids, matrix, PARAMS, version, 0.0)
    await store.publish(
        version, encode_model(model, {"events": 3}), encode_user_factors(USERS, users)
    )
    return model


async def publish_delta(store: ModelStore, snapshot: str, delta: int, item_id: str) -> str:
    version = await store.next_delta_version(snapshot, delta)
    factors = np.full((1, PARAMS.factors), delta, dtype=np.float32)
    assert await store.publish_delta(
        snapshot, delta, version, encode_delta(version, 1.0, [item_id], factors, {})
    )
    return version


async def test_a_fresh_worker_loads_the_snapshot_and_all_its_deltas(store):
    model = await publish_snapshot(store)
    await publish_delta(store, model.version, 1, "d1")
    last = await publish_delta(store, model.version, 2, "d2")
    offload = CountingOffload()
    published = await store.sync(None, offload)
    assert offload.calls == [(True, 2)]
    assert published.version == last == await store.current_version()
    assert published.model.item_ids == (*model.item_ids, "d1", "d2")


async def test_a_worker_behind_reads_only_the_deltas_it_lacks(store):
    model = await publish_snapshot(store)
    await publish_delta(store, model.version, 1, "d1")
    held = await store.sync(None, CountingOffload())
    await publish_delta(store, model.version, 2, "d2")
    last = await publish_delta(store, model.version, 3, "d3")
    offload = CountingOffload()
    published = await store.sync(held, offload)
    assert offload.calls == [(False, 2)]
    assert published.version == last and published.deltas == 3
    assert await store.sync(published, offload) is None, "up to date: nothing read"


async def test_a_new_snapshot_supersedes_the_deltas_of_the_last(store):
    old = await publish_snapshot(store)
    await publish_delta(store, old.version, 1, "d1")
    held = await store.sync(None, CountingOffload())
    new = await publish_snapshot(store)
    offload = CountingOffload()
    published = await store.sync(held, offload)
    assert offload.calls == [(True, 0)]
    assert published.version == new.version and "d1" not in published.model.item_positions


async def test_a_delta_is_refused_unless_it_is_the_next_on_the_current_snapshot(store):
    old = await publish_snapshot(store)
    await publish_snapshot(store)
    factors = np.zeros((1, PARAMS.factors), dtype=np.float32)
    blob = encode_delta("x", 1.0, ["d"], factors, {})
    assert not await store.publish_delta(old.version, 1, "x", blob), "superseded snapshot"
    current = await store.snapshot_version()
    assert not await store.publish_delta(current, 2, "x", blob), "delta 1 is missing"
    assert await store.current_version() == current


async def test_versions_keep_counting_up_through_deltas_and_snapshots(store):
    model = await publish_snapshot(store)
    delta = await publish_delta(store, model.version, 1, "d1")
    new = await publish_snapshot(store)
    sequences = [int(v.partition("-")[0]) for v in (model.version, delta, new.version)]
    assert sequences == sorted(set(sequences))


async def test_a_snapshots_user_factors_are_read_back_under_its_version(store):
    model = await publish_snapshot(store)
    await publish_delta(store, model.version, 1, "d1")

    user_ids, factors = decode_user_factors(await store.load_user_factors(model.version))

    assert user_ids == USERS and factors.shape == (3, PARAMS.factors)
    assert await store.load_user_factors("0-never-published") is None


async def test_old_snapshots_are_dropped_with_their_deltas_and_user_factors(store):
    first = await publish_snapshot(store)
    await publish_delta(store, first.version, 1, "d1")
    for _ in range(KEPT_VERSIONS):
        await publish_snapshot(store)
    assert await store.load(first.version) is None
    assert not await store.redis.exists(store.keys.model_deltas(first.version))
    assert await store.load_user_factors(first.version) is None


async def test_the_snapshot_metadata_stays_readable_while_deltas_are_current(store):
    model = await publish_snapshot(store)
    await publish_delta(store, model.version, 1, "d1")
    assert await store.snapshot_version() == model.version
    assert await store.load(model.version) is not None


async def test_a_rollback_serves_the_last_snapshot_with_its_deltas_and_drops_the_current(store):
    first = (await publish_snapshot(store)).version
    folded = await publish_delta(store, first, 1, "d")
    second = (await publish_snapshot(store)).version

    assert await store.roll_back() == folded

    assert (await store.snapshot_version(), await store.current_version()) == (first, folded)
    published = await store.sync(None, CountingOffload())
    assert (published.version, published.deltas) == (folded, 1)
    assert await store.load(second) is None and await store.load_user_factors(second) is None


async def test_rollbacks_go_back_one_snapshot_each_until_none_is_kept(store):
    versions = [(await publish_snapshot(store)).version for _ in range(KEPT_VERSIONS)]

    rolled = [await store.roll_back() for _ in range(KEPT_VERSIONS)]

    assert rolled == [*reversed(versions[:-1]), None]
    assert await store.current_version() == versions[0]
