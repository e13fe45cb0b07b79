"""The trainer's decisions against a real Redis: what it publishes and when it refits."""

from __future__ import annotations

import uuid

import orjson
from redis.asyncio import Redis

from app.settings import Settings
from app.stores.keys import RedisKeys
from app.stores.model import ModelStore
from app.trainer import LEASE_TTL_MS, Trainer
from harness.services import REDIS_URL


def state(items: dict[str, float]) -> bytes:
    """A changelog value as the worker writes it: item -> [weight, count, last time]."""
    entries = {item: [weight, 1, 0.0] for item, weight in items.items()}
    return orjson.dumps({"items": entries, "event_count": len(items)})


async def test_a_trainer_resuming_a_new_item_fold_does_not_refit():
    redis = Redis.from_url(REDIS_URL)
    models = ModelStore(redis, RedisKeys(f"test:trainer-{uuid.uuid4().hex[:10]}"))
    settings = Settings(als_factors=4, als_iterations=3)
    try:
        first = Trainer(settings, models, "first")
        assert await models.hold_lease("first", LEASE_TTL_MS)
        for user in range(6):
            first.apply(f"u{user}".encode(), state({"a": 1.0, "b": 1.0, f"c{user % 2}": 2.0}))
        await first.fit_and_publish("no model yet")
        first.apply(b"u0", state({"a": 1.0, "b": 1.0, "c0": 2.0, "brand-new": 1.0}))
        await first.fold_new_items()
        assert "brand-new" in first.model.item_positions
        await models.release_lease("first")

        resumed = Trainer(settings, models, "second")
        await resumed.resume_published()
        for user in range(6):
            items = {"a": 1.0, "b": 1.0, f"c{user % 2}": 2.0}
            resumed.apply(
                f"u{user}".encode(), state(items | ({"brand-new": 1.0} if user == 0 else {}))
            )
        assert resumed.model.version == first.model.version
        assert resumed.fit_due(requested=False) is None
    finally:
        await redis.aclose()
