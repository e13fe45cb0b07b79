"""Redis: items' running popularity totals, one sorted set per half-life
(``{prefix}:popular:{half_life}``) of log2 decayed weights (see ``app.popularity``), and the
newest event time they count, which every worker reads them at."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from app.popularity import Popularity, Trending, read_time
from app.ranker import Scored
from app.stores.keys import RedisKeys

LOG_ADD_SCRIPT = """
local ln2 = math.log(2)
if ARGV[1] ~= '' then
  local newest = tonumber(redis.call('GET', KEYS[2]) or '-inf')
  if tonumber(ARGV[1]) > newest then redis.call('SET', KEYS[2], ARGV[1]) end
end
for i = 2, #ARGV, 2 do
  local item = ARGV[i]
  local added = tonumber(ARGV[i + 1])
  local current = redis.call('ZSCORE', KEYS[1], item)
  if current then
    local c = tonumber(current)
    local high, low = math.max(c, added), math.min(c, added)
    added = high + math.log(1 + 2 ^ (low - high)) / ln2
  end
  redis.call('ZADD', KEYS[1], added, item)
end
return (#ARGV - 1) / 2
"""
"""Adds log2-domain scores to the sorted set atomically (``Popularity.add_log`` in Redis) and
moves the newest event time forward, never back."""


class PopularityStore:
    """Adds to and ranks the popularity totals."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._log_add = redis.register_script(LOG_ADD_SCRIPT)

    async def add(self, increments: Popularity) -> None:
        """Add each item's accumulated log2 score to its running total, and its newest event
        time (one round trip)."""
        if not increments and increments.newest is None:
            return
        args: list[Any] = ["" if increments.newest is None else repr(increments.newest)]
        for item_id, score in increments.items():
            args += [item_id, repr(score)]
        keys = [self.keys.popular(increments.half_life), self.keys.newest_event_at]
        await self._log_add(keys=keys, args=args)

    async def top(self, n: int, half_life: float) -> Scored:
        """The n items with the highest decayed weight, as (item id, log2 score)."""
        ranked = await self.redis.zrevrange(self.keys.popular(half_life), 0, n - 1, withscores=True)
        return [(item.decode(), float(score)) for item, score in ranked]

    async def trending(self, n: int, half_life: float, clock: str, now: float) -> Trending:
        """The n most popular items and the time their weights are read at (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self.keys.popular(half_life), 0, n - 1, withscores=True)
            pipe.get(self.keys.newest_event_at)
            ranked, newest = await pipe.execute()
        items = [(item.decode(), float(score)) for item, score in ranked]
        return Trending(items, read_time(clock, None if newest is None else float(newest), now))

    async def all(self, half_life: float) -> Scored:
        """Every item's total for one half-life, best first (a dump's copy)."""
        ranked = await self.redis.zrevrange(self.keys.popular(half_life), 0, -1, withscores=True)
        return [(item.decode(), float(score)) for item, score in ranked]

    async def newest_event_at(self) -> float | None:
        """The newest event time the totals count; None before any."""
        newest = await self.redis.get(self.keys.newest_event_at)
        return None if newest is None else float(newest)

    async def is_empty(self, half_life: float) -> bool:
        return not await self.redis.exists(self.keys.popular(half_life))
