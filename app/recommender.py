"""Keeps every touched user's top-N list in Redis fresh against the current ALS model.

The stream agent records each applied event here; a short timer calls :meth:`Recommender.tick`,
which re-solves the touched users exactly against the current item factors and writes their
lists. Full fits run on their own thread, so neither blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Protocol

from app import ranker
from app.cache import CachedList, RecommendationStore, encode_list
from app.models import UserAction, UserState
from app.settings import Settings

log = logging.getLogger(__name__)

FIT_RETRY_DELAY = 30.0
MAX_STALE = 100_000


class StateSource(Protocol):
    """Read access to the per-user table state this worker holds."""

    def get(self, user_id: str) -> UserState | None: ...

    def items(self) -> Iterable[tuple[str, UserState]]: ...


def model_version(now: float) -> str:
    """A sortable version name for a model fitted at ``now``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class Recommender:
    def __init__(self, settings: Settings, store: RecommendationStore, states: StateSource) -> None:
        self.settings = settings
        self.store = store
        self.states = states
        self.params = ranker.AlsParams(
            factors=settings.als_factors,
            regularization=settings.als_regularization,
            alpha=settings.als_alpha,
            iterations=settings.als_iterations,
            threads=settings.als_threads,
        )
        self.model: ranker.FactorModel | None = None
        self._touched: dict[str, UserState] = {}
        self._stale: dict[str, None] = {}
        self._popularity: dict[str, float] = {}
        self._solver = ThreadPoolExecutor(1, thread_name_prefix="fold-in")
        self._trainer = ThreadPoolExecutor(1, thread_name_prefix="als-fit")
        self._write_lock = asyncio.Lock()
        self._fit_task: asyncio.Task[None] | None = None
        self._next_fit_at = 0.0
        self._events_at_fit = 0
        self._events_since_fit = 0

    @property
    def model_version(self) -> str | None:
        return None if self.model is None else self.model.version

    @property
    def fitting(self) -> bool:
        return self._fit_task is not None and not self._fit_task.done()

    def record(self, action: UserAction, weight: float, state: UserState) -> None:
        """Note an applied event and the user's new state: the user needs a new list, the
        item gains popularity. Keeping the state saves the tick a table read per user."""
        self._touched[action.user_id] = state
        self._events_since_fit += 1
        if weight > 0:
            half_life = self.settings.popularity_half_life
            self._add_popularity(
                action.item_id, ranker.decayed_log_score(weight, action.timestamp, half_life)
            )

    def mark_stale(self, user_id: str) -> None:
        """A served list came from an older model: re-rank it on a coming tick.

        Lists are re-ranked for a new model when they are read or their user acts, not all at
        once after a fit, so a fit costs nothing for users who are not active.
        """
        if len(self._stale) < MAX_STALE:
            self._stale[user_id] = None

    def _add_popularity(self, item_id: str, log_score: float) -> None:
        previous = self._popularity.get(item_id)
        self._popularity[item_id] = (
            log_score if previous is None else ranker.log_add(previous, log_score)
        )

    async def tick(self) -> None:
        """Flush popularity, start the first fit when there is data, refresh touched users.

        When Redis fails midway, the popularity and users taken are put back for the next tick.
        """
        popularity, self._popularity = self._popularity, {}
        states, self._touched = self._touched, {}
        for user_id in list(islice(self._stale, self.settings.refresh_batch)):
            del self._stale[user_id]
            if user_id not in states and (state := self.states.get(user_id)) is not None:
                states[user_id] = state
        try:
            await self.store.add_popularity(popularity)
            if states:
                await self.refresh(states)
        except Exception:
            for item_id, score in popularity.items():
                self._add_popularity(item_id, score)
            for user_id, state in states.items():
                self._touched.setdefault(user_id, state)
            raise
        if self._fit_due() and any(True for _ in self.states.items()):
            self.start_fit()

    def _fit_due(self) -> bool:
        """No model yet, or the data grew by ``retrain_growth`` times what the model saw."""
        if self.fitting or time.time() < self._next_fit_at:
            return False
        if self.model is None:
            return True
        growth = self.settings.retrain_growth
        return growth > 0 and self._events_since_fit >= growth * max(self._events_at_fit, 1)

    async def refresh(self, states: Mapping[str, UserState]) -> dict[str, CachedList]:
        """Recompute and cache these users' lists from their states; returns them by user."""
        async with self._write_lock:
            popular = await self.store.popular(self.settings.cache_size * 3)
            lists, encoded = await asyncio.get_running_loop().run_in_executor(
                self._solver, self._compute_lists, self.model, states, popular
            )
            await self.store.put_lists(encoded)
            return lists

    def _compute_lists(
        self,
        model: ranker.FactorModel | None,
        states: Mapping[str, UserState],
        popular: ranker.Scored,
    ) -> tuple[dict[str, CachedList], dict[str, bytes]]:
        rows = [state.weights() for state in states.values()]
        personal = (
            [[]] * len(rows)
            if model is None
            else ranker.recommend(model, rows, self.settings.cache_size)
        )
        now = time.time()
        lists: dict[str, CachedList] = {}
        for user_id, row, items in zip(states, rows, personal, strict=True):
            if items:
                lists[user_id] = CachedList(
                    items=items, source="personal", model_version=model.version, updated_at=now
                )
            else:
                lists[user_id] = self.popular_list(popular, row, now)
        return lists, {user_id: encode_list(entry) for user_id, entry in lists.items()}

    def popular_list(self, popular: ranker.Scored, seen: Iterable[str], now: float) -> CachedList:
        """Popular items the user has not seen, scored by their decayed weight now."""
        half_life = self.settings.popularity_half_life
        items = ranker.popular_excluding(popular, set(seen), self.settings.cache_size)
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
        popular = await self.store.popular(self.settings.cache_size)
        return self.popular_list(popular, (), time.time())

    def start_fit(self) -> bool:
        """Start a full fit unless one is running; returns whether one was started."""
        if self.fitting:
            return False
        self._events_since_fit = 0
        self._fit_task = asyncio.get_running_loop().create_task(self._fit())
        return True

    async def _fit(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.time()
        try:
            model, users, events = await loop.run_in_executor(self._trainer, self._fit_blocking)
        except Exception:
            log.exception("full ALS fit failed; retrying in %.0f s", FIT_RETRY_DELAY)
            self._next_fit_at = time.time() + FIT_RETRY_DELAY
            return
        self.model = model
        self._events_at_fit = events
        log.info(
            "model %s fitted on %d users x %d items in %.1f s",
            model.version,
            users,
            len(model.item_ids),
            time.time() - started,
        )

    def _fit_blocking(self) -> tuple[ranker.FactorModel, int, int]:
        """Fit on a snapshot of every held user; returns the model, user and event counts."""
        started = time.monotonic()
        rows: list[dict[str, float]] = []
        events = 0
        for _, state in self.states.items():
            rows.append(state.weights())
            events += state.event_count
        log.info(
            "fit snapshot: %d users, %d events in %.2f s",
            len(rows),
            events,
            time.monotonic() - started,
        )
        iterations = self.params.iterations

        def progress(iteration: int, seconds: float) -> None:
            log.info("fit iteration %d/%d (%.2f s)", iteration + 1, iterations, seconds)

        now = time.time()
        model = ranker.fit(rows, self.params, model_version(now), now, progress)
        return model, len(rows), events

    def close(self) -> None:
        self._solver.shutdown(wait=False, cancel_futures=True)
        self._trainer.shutdown(wait=False, cancel_futures=True)
