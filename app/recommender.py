"""Keeps every touched user's top-N list in Redis fresh against the current published model.

The stream agent records each applied event here; a short timer calls :meth:`Recommender.tick`,
which re-solves the touched users exactly against the current item factors (on a worker thread,
off the event loop) and writes their lists. Models are fitted by the trainer (``app.trainer``)
and published in Redis; :meth:`Recommender.sync_model` switches to a new version atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Protocol

from app import metrics, ranker
from app.cache import CachedList, RecommendationStore, encode_list
from app.catalogue import ContentIndex, blend
from app.catalogue_store import CatalogueStore
from app.model_store import ModelStore, decode_model
from app.models import UserAction, UserState
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_STALE = 100_000


class StateSource(Protocol):
    """Read access to the per-user table state this worker holds."""

    def get(self, user_id: str) -> UserState | None: ...

    def items(self) -> Iterable[tuple[str, UserState]]: ...


class Recommender:
    def __init__(
        self,
        settings: Settings,
        store: RecommendationStore,
        models: ModelStore,
        catalogue: CatalogueStore,
        states: StateSource,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.catalogue = catalogue
        self.states = states
        self.model: ranker.FactorModel | None = None
        self.content: ContentIndex | None = None
        self.unavailable: frozenset[str] = frozenset()
        self.categories: Mapping[str, tuple[str, ...]] = {}
        self._catalogue_version = 0
        self._touched: dict[str, UserState] = {}
        self._since: dict[str, float] = {}
        self.live = metrics.LiveHitRate()
        self._stale: dict[str, None] = {}
        self._popularity: dict[float, dict[str, float]] = {hl: {} for hl in settings.half_lives}
        self._solver = ThreadPoolExecutor(1, thread_name_prefix="fold-in")
        self._write_lock = asyncio.Lock()

    @property
    def model_version(self) -> str | None:
        return None if self.model is None else self.model.version

    def record(
        self, action: UserAction, weight: float, state: UserState, received_at: float | None
    ) -> None:
        """Note an applied event and the user's new state: the user needs a new list, the
        item gains popularity. Keeping the state saves the tick a table read per user; the
        earliest unflushed Kafka timestamp (seconds) per user measures freshness."""
        self._touched[action.user_id] = state
        if received_at is not None:
            self._since.setdefault(action.user_id, received_at)
        if weight > 0:
            self.live.test(action.user_id, action.item_id)
            for half_life in self._popularity:
                score = ranker.decayed_log_score(weight, action.timestamp, half_life)
                self._add_popularity(half_life, action.item_id, score)

    def mark_stale(self, user_id: str) -> None:
        """A served list came from an older model: re-rank it on a coming tick.

        Lists are re-ranked for a new model when they are read or their user acts, not all at
        once after a fit, so a new model costs nothing for users who are not active.
        """
        if len(self._stale) < MAX_STALE:
            self._stale[user_id] = None

    def _add_popularity(self, half_life: float, item_id: str, log_score: float) -> None:
        scores = self._popularity[half_life]
        previous = scores.get(item_id)
        scores[item_id] = log_score if previous is None else ranker.log_add(previous, log_score)

    async def tick(self) -> None:
        """Flush popularity, refresh touched users and then stale ones.

        When Redis fails midway, the popularity and users taken are put back for the next tick.
        """
        popularity = self._popularity
        self._popularity = {half_life: {} for half_life in popularity}
        states, self._touched = self._touched, {}
        since, self._since = self._since, {}
        for user_id in list(islice(self._stale, self.settings.refresh_batch)):
            del self._stale[user_id]
            if user_id not in states and (state := self.states.get(user_id)) is not None:
                states[user_id] = state
        try:
            for half_life, scores in popularity.items():
                await self.store.add_popularity(half_life, scores)
            if states:
                await self.refresh(states)
        except Exception:
            for user_id, received_at in since.items():
                self._since.setdefault(user_id, received_at)
            for half_life, scores in popularity.items():
                for item_id, score in scores.items():
                    self._add_popularity(half_life, item_id, score)
            for user_id, state in states.items():
                self._touched.setdefault(user_id, state)
            raise
        written = time.time()
        for received_at in since.values():
            metrics.freshness_seconds.observe(max(0.0, written - received_at))

    async def sync_model(self) -> bool:
        """Switch to the published current model if it changed; returns whether it did."""
        version = await self.models.current_version()
        if version is None or version == self.model_version:
            return False
        blob = await self.models.load(version)
        if blob is None:
            return False
        loop = asyncio.get_running_loop()
        model, meta = await loop.run_in_executor(self._solver, decode_model, blob)
        self.model = model
        metrics.model.info({"version": version})
        if "fit_seconds" in meta["metrics"]:
            metrics.retrain_seconds.set(meta["metrics"]["fit_seconds"])
        log.info("serving model %s: %s", version, meta["metrics"])
        return True

    async def sync_catalogue(self) -> bool:
        """Rebuild the content index when the catalogue changed; returns whether it did."""
        version = await self.catalogue.version()
        if version == self._catalogue_version:
            return False
        records = await self.catalogue.all()
        loop = asyncio.get_running_loop()
        self.content = await loop.run_in_executor(self._solver, ContentIndex, records)
        self.unavailable = frozenset(r.item_id for r in records if not r.available)
        self.categories = {record.item_id: record.categories for record in records}
        self._catalogue_version = version
        log.info(
            "catalogue version %d: %d items, %d unavailable",
            version,
            len(records),
            len(self.unavailable),
        )
        return True

    def visible(
        self, items: Iterable[tuple[str, float]], exclude: Collection[str], category: str | None
    ) -> list[tuple[str, float]]:
        """Cached items still fit to show: available, not excluded, in the category if given."""
        return [
            (item_id, score)
            for item_id, score in items
            if item_id not in self.unavailable
            and item_id not in exclude
            and (category is None or category in self.categories.get(item_id, ()))
        ]

    async def refresh(self, states: Mapping[str, UserState]) -> dict[str, CachedList]:
        """Recompute and cache these users' lists from their states; returns them by user."""
        async with self._write_lock:
            started = time.perf_counter()
            popular = await self.store.popular(
                self.settings.cache_size * 3, self.settings.popularity_half_life
            )
            lists, encoded = await asyncio.get_running_loop().run_in_executor(
                self._solver, self._compute_lists, self.model, states, popular
            )
            await self.store.put_lists(encoded)
            metrics.fold_in_seconds.observe(time.perf_counter() - started)
            metrics.fold_in_batch_size.observe(len(lists))
            for user_id, entry in lists.items():
                self.live.written(user_id, (item for item, _ in entry["items"][: metrics.TOP_K]))
            return lists

    def _compute_lists(
        self,
        model: ranker.FactorModel | None,
        states: Mapping[str, UserState],
        popular: ranker.Scored,
    ) -> tuple[dict[str, CachedList], dict[str, bytes]]:
        rows = [state.weights() for state in states.values()]
        unavailable, content = self.unavailable, self.content
        personal = (
            [[]] * len(rows)
            if model is None
            else ranker.recommend(model, rows, self.settings.cache_size, exclude=unavailable)
        )
        now = time.time()
        lists: dict[str, CachedList] = {}
        for (user_id, state), row, items in zip(states.items(), rows, personal, strict=True):
            little_history = state.event_count <= self.settings.content_max_events
            similar = (
                content.recommend_for_profile(row, self.settings.cache_size, exclude=unavailable)
                if content is not None and little_history
                else []
            )
            if similar:
                lists[user_id] = self.content_list(similar, popular, row, now)
            elif items:
                lists[user_id] = CachedList(
                    items=items, source="personal", model_version=model.version, updated_at=now
                )
            else:
                lists[user_id] = self.popular_list(popular, row, now)
        return lists, {user_id: encode_list(entry) for user_id, entry in lists.items()}

    def content_list(
        self, similar: ranker.Scored, popular: ranker.Scored, seen: Iterable[str], now: float
    ) -> CachedList:
        """For users with little history: items like theirs, blended with what is popular."""
        trending = self.popular_list(popular, seen, now)["items"]
        items = blend(similar, trending, self.settings.content_weight, self.settings.cache_size)
        return CachedList(
            items=items, source="content", model_version=self.model_version, updated_at=now
        )

    def popular_list(
        self,
        popular: ranker.Scored,
        seen: Iterable[str],
        now: float,
        half_life: float | None = None,
    ) -> CachedList:
        """Popular items the user has not seen, scored by their decayed weight now."""
        half_life = half_life or self.settings.popularity_half_life
        hidden = self.unavailable.union(seen)
        items = ranker.popular_excluding(popular, hidden, self.settings.cache_size)
        return CachedList(
            items=[(item, ranker.decayed_value(score, now, half_life)) for item, score in items],
            source="popular",
            model_version=self.model_version,
            updated_at=now,
        )

    async def recommend_now(self, user_id: str) -> CachedList:
        """The miss path: compute (and cache) a held user's list; popular for unknown users."""
        state = self.states.get(user_id)
        if state is not None:
            return (await self.refresh({user_id: state}))[user_id]
        popular = await self.store.popular(
            self.settings.cache_size, self.settings.popularity_half_life
        )
        return self.popular_list(popular, (), time.time())

    def close(self) -> None:
        self._solver.shutdown(wait=False, cancel_futures=True)
