"""Redis: each experiment's counts per arm (``{prefix}:experiment:{name}``, a hash of
``{arm}:{counter}`` -> count), which every worker adds its own to, for ``GET /experiments``."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from app.stores.keys import RedisKeys

SEPARATOR = ":"  # arm names never hold one (``app.experiments.parse_arms``)


class ExperimentStore:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def add(self, experiment: str, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Add one worker's counts (arm -> counter -> count), all or none."""
        key = self.keys.experiment(experiment)
        async with self.redis.pipeline(transaction=True) as pipeline:
            for arm, mine in counts.items():
                for counter, count in mine.items():
                    pipeline.hincrby(key, f"{arm}{SEPARATOR}{counter}", count)
            await pipeline.execute()

    async def counts(self, experiment: str) -> dict[str, dict[str, int]]:
        """Arm -> counter -> count, over every worker."""
        found: dict[str, dict[str, int]] = {}
        for field, value in (await self.redis.hgetall(self.keys.experiment(experiment))).items():
            arm, _, counter = field.decode().rpartition(SEPARATOR)
            found.setdefault(arm, {})[counter] = int(value)
        return found
