"""Redis holds only derived state: when it loses its data or goes away, reads keep answering.

Lost data (FLUSHALL, a restart without persistence) is noticed through a token,
``{prefix}:epoch``, that every worker reads each second: when it is gone or was replaced, the
worker refills what it holds. Popularity is re-added from its users' table state, every held
user's list is recomputed (most recently active users first), and a fit is requested if the
published model went too. Until a user's list is back, the miss path computes it on demand.

While Redis cannot be reached at all, reads still answer 200: a held user's list is computed
from table state and the model in memory, and everybody else gets the popular items this worker
last read from Redis (it keeps a copy, refreshed each second). Nothing is cached meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from redis.exceptions import RedisError

from app import serving
from app.models import LAST_AT, WEIGHT
from app.popularity import Trending, accumulators
from app.refresher import ListRefresher
from app.serving import ServedList
from app.settings import Settings
from app.stores import Stores

log = logging.getLogger(__name__)

SCAN_YIELD_EVERY = 1000
"""Users read from the table between two yields to the event loop during a refill."""


class RedisRecovery:
    def __init__(self, settings: Settings, stores: Stores, refresher: ListRefresher) -> None:
        self.settings = settings
        self.stores = stores
        self.refresher = refresher
        self.epoch: bytes | None = None
        self.popular: dict[float, Trending] = {}
        self.refill_due = False
        self.refill_task: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Refill when Redis lost its data since the last check; keep a copy of popularity."""
        redis, epoch_key = self.stores.redis, self.stores.keys.epoch
        epoch = await redis.get(epoch_key)
        if epoch is None:
            # No token: Redis lost its data, or this deployment is new. On this worker's first
            # check, popularity already written by its ticks tells the two apart; re-adding
            # then would count those events twice.
            first_check = self.epoch is None
            already_live = first_check and not await self.stores.popularity.is_empty(
                self.settings.popularity_half_life
            )
            await redis.set(epoch_key, uuid.uuid4().hex, nx=True)
            epoch = await redis.get(epoch_key)
            lost = not already_live
        else:
            lost = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        if lost:
            log.warning("Redis lost its data: refilling popularity and lists from table state")
            self.refill_due = True
        if self.refill_due and (self.refill_task is None or self.refill_task.done()):
            self.refill_due = False
            self.refill_task = asyncio.get_running_loop().create_task(self._refill_or_retry())
        for half_life in self.settings.half_lives:
            self.popular[half_life] = await self.refresher.trending(half_life)

    async def _refill_or_retry(self) -> None:
        try:
            await self.refill()
        except (RedisError, OSError) as error:
            log.warning("refill interrupted, retrying on the next check: %s", error)
            self.refill_due = True

    async def refill(self) -> None:
        """Re-add this worker's share of popularity, then rewrite every held user's list."""
        started = time.monotonic()
        recency: list[tuple[float, str]] = []
        popularity = accumulators(self.settings.half_lives)
        for position, (user_id, state) in enumerate(self.refresher.states.items()):
            recency.append((state.last_event_at, user_id))
            for item_id, entry in state.items.items():
                for totals in popularity.values():
                    totals.add(item_id, entry[WEIGHT], entry[LAST_AT])
            if position % SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        for totals in popularity.values():
            await self.stores.popularity.add(totals)
        if await self.stores.models.current_version() is None:
            await self.stores.models.request_retrain()
        recency.sort(reverse=True)
        batch = self.settings.refresh_batch
        for start in range(0, len(recency), batch):
            users = {
                user_id: self.refresher.history(state)
                for _, user_id in recency[start : start + batch]
                if (state := self.refresher.states.get(user_id)) is not None
            }
            await self.refresher.refresh(users)
        log.info(
            "refilled Redis: %d users' lists, popularity of %d items in %.1f s",
            len(recency),
            len(popularity[self.settings.popularity_half_life]),
            time.monotonic() - started,
        )

    def list_without_redis(self, user_id: str) -> ServedList:
        """A user's list computed in memory under the serving policy, from the table state and
        the model this worker holds and the popular items it last read from Redis."""
        state = self.refresher.states.get(user_id)
        refresher = self.refresher
        if state is None:
            return refresher.popular_list(self.last_popular(), ())
        (entry,) = serving.user_lists(
            refresher.model,
            [refresher.history(state)],
            refresher.catalogue,
            self.last_popular(),
            refresher.rules,
        )
        return entry

    async def trending(self, half_life: float | None = None, depth: int | None = None) -> Trending:
        """The popular items as the refresher reads them from Redis, or the ones last read
        while it cannot be reached."""
        try:
            return await self.refresher.trending(half_life, depth)
        except (RedisError, OSError):
            return self.last_popular(half_life)

    def last_popular(self, half_life: float | None = None) -> Trending:
        """The popular items last read from Redis, for when it cannot be reached."""
        half_life = half_life or self.settings.popularity_half_life
        return self.popular.get(half_life, Trending([], time.time()))
