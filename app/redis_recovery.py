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
from collections import defaultdict

from redis.exceptions import RedisError

from app import ranker
from app.agents import recommender
from app.cache import CachedList, RecommendationStore
from app.faust_app import app, models, settings, store
from app.model_store import ModelStore
from app.models import LAST_AT, WEIGHT
from app.recommender import Recommender
from app.settings import Settings

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
SCAN_YIELD_EVERY = 1000
"""Users read from the table between two yields to the event loop during a refill."""


class RedisRecovery:
    def __init__(
        self,
        settings: Settings,
        store: RecommendationStore,
        models: ModelStore,
        recommender: Recommender,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.recommender = recommender
        self.epoch: bytes | None = None
        self.popular: dict[float, ranker.Scored] = {}
        self.refill_due = False
        self.refill_task: asyncio.Task[None] | None = None

    @property
    def epoch_key(self) -> str:
        return f"{self.store.prefix}:epoch"

    async def check(self) -> None:
        """Refill when Redis lost its data since the last check; keep a copy of popularity."""
        redis = self.store.redis
        epoch = await redis.get(self.epoch_key)
        if epoch is None:
            # No token: Redis lost its data, or this deployment is new. On this worker's first
            # check, popularity already written by its ticks tells the two apart; re-adding
            # then would count those events twice.
            first_check = self.epoch is None
            already_live = first_check and bool(
                await self.store.popular(1, self.settings.popularity_half_life)
            )
            await redis.set(self.epoch_key, uuid.uuid4().hex, nx=True)
            epoch = await redis.get(self.epoch_key)
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
            self.popular[half_life] = await self.store.popular(
                self.settings.cache_size * 3, half_life
            )

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
        popularity: dict[float, dict[str, float]] = defaultdict(dict)
        for position, (user_id, state) in enumerate(self.recommender.states.items()):
            recency.append((state.last_event_at, user_id))
            for item_id, entry in state.items.items():
                if entry[WEIGHT] <= 0:
                    continue
                for half_life in self.settings.half_lives:
                    score = ranker.decayed_log_score(entry[WEIGHT], entry[LAST_AT], half_life)
                    scores = popularity[half_life]
                    previous = scores.get(item_id)
                    scores[item_id] = score if previous is None else ranker.log_add(previous, score)
            if position % SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        for half_life, scores in popularity.items():
            await self.store.add_popularity(half_life, scores)
        if await self.models.current_version() is None:
            await self.models.request_retrain()
        recency.sort(reverse=True)
        batch = self.settings.refresh_batch
        for start in range(0, len(recency), batch):
            states = {
                user_id: state
                for _, user_id in recency[start : start + batch]
                if (state := self.recommender.states.get(user_id)) is not None
            }
            await self.recommender.refresh(states)
        log.info(
            "refilled Redis: %d users' lists, popularity of %d items in %.1f s",
            len(recency),
            len(popularity.get(self.settings.popularity_half_life, {})),
            time.monotonic() - started,
        )

    def list_without_redis(self, user_id: str) -> CachedList:
        """A user's list computed in memory: personal when held here and known to the model."""
        state = self.recommender.states.get(user_id)
        seen = {} if state is None else state.weights()
        model = self.recommender.model
        if seen and model is not None:
            items = ranker.recommend(model, [seen], self.settings.cache_size)[0]
            if items:
                return CachedList(
                    items=items,
                    source="personal",
                    model_version=model.version,
                    updated_at=time.time(),
                )
        return self.recommender.popular_list(self.last_popular(), seen, time.time())

    def last_popular(self, half_life: float | None = None) -> ranker.Scored:
        """The popular items last read from Redis, for when it cannot be reached."""
        return self.popular.get(half_life or self.settings.popularity_half_life, [])


redis_recovery = RedisRecovery(settings, store, models, recommender)


@app.timer(CHECK_INTERVAL)
async def watch_redis() -> None:
    try:
        await redis_recovery.check()
    except (RedisError, OSError) as error:
        log.warning("Redis check postponed, Redis unavailable: %s", error)
