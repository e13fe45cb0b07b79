"""Redis: the cached top-N lists that ``GET /recommend`` serves (``{prefix}:rec:{user_id}``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import orjson
from redis.asyncio import Redis

from app.serving import ServedList
from app.stores.keys import RedisKeys


def encode_list(entry: ServedList) -> bytes:
    """The stored form of a list: compact JSON."""
    return orjson.dumps(entry)


class ListStore:
    """Reads and writes users' cached lists."""

    def __init__(self, redis: Redis, keys: RedisKeys, ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl

    async def put_lists(self, encoded: Mapping[str, bytes]) -> None:
        """Write many users' lists, already encoded by :func:`encode_list`, in one round trip."""
        if not encoded:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, entry in encoded.items():
                pipe.set(self.keys.user_list(user_id), entry, ex=self.ttl)
            await pipe.execute()

    async def get_list(self, user_id: str) -> ServedList | None:
        """The user's cached list; one cached before lists said their event count has
        ``event_count`` None (unknown) until it is rewritten."""
        raw = await self.redis.get(self.keys.user_list(user_id))
        if raw is None:
            return None
        entry = orjson.loads(raw)
        entry.setdefault("event_count", None)
        return entry

    async def delete(self, user_ids: Collection[str]) -> None:
        """Delete these users' cached lists (erased users)."""
        if user_ids:
            await self.redis.delete(*(self.keys.user_list(user_id) for user_id in user_ids))

    async def delete_all(self) -> int:
        """Delete every cached list (not the popularity); how many were deleted."""
        deleted = 0
        async for key in self.redis.scan_iter(match=self.keys.every_list, count=1000):
            deleted += await self.redis.delete(key)
        return deleted

    async def ping(self) -> bool:
        return bool(await self.redis.ping())
