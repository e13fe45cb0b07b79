"""The Redis side of the product: derived state every worker shares (lists, popularity,
published models, the catalogue, experiment counts). Redis holds nothing that Kafka cannot
rebuild, but for the experiment's counts of lists served."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from app.settings import Settings
from app.stores.catalogue import CatalogueStore
from app.stores.experiments import ExperimentStore
from app.stores.keys import RedisKeys
from app.stores.lists import ListStore
from app.stores.model import ModelStore
from app.stores.popularity import PopularityStore


@dataclass(frozen=True)
class Stores:
    """One Redis client and the stores built on it."""

    redis: Redis
    keys: RedisKeys
    lists: ListStore
    popularity: PopularityStore
    models: ModelStore
    catalogue: CatalogueStore
    experiments: ExperimentStore

    @classmethod
    def of(cls, redis: Redis, settings: Settings) -> Stores:
        keys = RedisKeys(settings.redis_prefix)
        return cls(
            redis=redis,
            keys=keys,
            lists=ListStore(redis, keys, settings.cache_ttl),
            popularity=PopularityStore(redis, keys),
            models=ModelStore(redis, keys),
            catalogue=CatalogueStore(redis, keys),
            experiments=ExperimentStore(redis, keys),
        )

    @classmethod
    def connect(cls, settings: Settings) -> Stores:
        """Stores on a new client of ``RECSYS_REDIS_URL`` (it connects on first use)."""
        return cls.of(Redis.from_url(settings.redis_url), settings)

    async def close(self) -> None:
        await self.redis.aclose()
