"""Which Redis keys a replay deletes, found in the real Redis."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from app.stores.keys import RedisKeys
from harness.services import REDIS_URL


async def test_derived_keys_are_found_under_the_literal_prefix_only():
    prefix = f"test:{uuid.uuid4().hex[:8]}*["
    neighbour = prefix.replace("*[", "x[")
    redis = Redis.from_url(REDIS_URL)
    mine = [f"{prefix}:rec:u1", f"{prefix}:popular:3600", f"{prefix}:model:current"]
    others = [f"{neighbour}:rec:u1", f"{prefix}:items", f"{prefix}:epoch"]
    try:
        for key in mine + others:
            await redis.set(key, b"1", ex=60)
        found = set()
        for pattern in RedisKeys(prefix).derived_patterns:
            found |= {key.decode() async for key in redis.scan_iter(match=pattern)}
    finally:
        await redis.delete(*mine, *others)
        await redis.aclose()
    assert found == set(mine)
