"""Redis: the cached top-N lists that ``GET /recommend`` serves, and decayed item popularity.

Keys are namespaced under the configured prefix and built only from validated ids:
``{prefix}:rec:{user_id}`` holds a JSON list entry, ``{prefix}:popular:{half_life}`` a sorted
set of ``log2`` decayed weights for one half-life in seconds (see ``ranker.decayed_log_score``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import orjson
from redis.asyncio import Redis

from app.ranker import Scored

# Adds log2-domain scores to the sorted set: score = log2(2^current + 2^added), atomically.
_LOG_ADD_SCRIPT = """
local ln2 = math.log(2)
for i = 1, #ARGV, 2 do
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
return #ARGV / 2
"""


class CachedList(TypedDict):
    items: list[tuple[str, float]]
    source: str
    model_version: str | None
    updated_at: float


def encode_list(entry: CachedList) -> bytes:
    """The stored form of a list: compact JSON."""
    return orjson.dumps(entry)


class RecommendationStore:
    """Reads and writes the Redis side of the product."""

    def __init__(self, redis: Redis, prefix: str, ttl: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._log_add = redis.register_script(_LOG_ADD_SCRIPT)

    def list_key(self, user_id: str) -> str:
        return f"{self.prefix}:rec:{user_id}"

    def popular_key(self, half_life: float) -> str:
        return f"{self.prefix}:popular:{half_life:g}"

    async def put_lists(self, encoded: Mapping[str, bytes]) -> None:
        """Write many users' lists, already encoded by :func:`encode_list`, in one round trip."""
        if not encoded:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, entry in encoded.items():
                pipe.set(self.list_key(user_id), entry, ex=self.ttl)
            await pipe.execute()

    async def get_list(self, user_id: str) -> CachedList | None:
        raw = await self.redis.get(self.list_key(user_id))
        return None if raw is None else orjson.loads(raw)

    async def add_popularity(self, half_life: float, log_scores: Mapping[str, float]) -> None:
        """Add each item's log2 decayed weight (for this half-life) to its running total."""
        if not log_scores:
            return
        args: list[Any] = []
        for item_id, score in log_scores.items():
            args += [item_id, repr(score)]
        await self._log_add(keys=[self.popular_key(half_life)], args=args)

    async def popular(self, n: int, half_life: float) -> Scored:
        """The n items with the highest decayed weight, as (item id, log2 score)."""
        key = self.popular_key(half_life)
        ranked = await self.redis.zrevrange(key, 0, n - 1, withscores=True)
        return [(item.decode(), float(score)) for item, score in ranked]

    async def ping(self) -> bool:
        return bool(await self.redis.ping())
