"""Keeps every touched user's top-N list in Redis fresh against the current published model.

The stream agent records each applied event here; :meth:`ListRefresher.refresh_continuously`
ticks as soon as a user is touched: :meth:`ListRefresher.tick` re-solves the touched users
exactly against the current item factors and writes the lists the serving policy
(``app.serving``) chooses. Events that arrive during a tick wait for the next one, so the batch
grows with the load instead of a fixed clock adding its period.

Lists are computed on the event loop, ``refresh_slice`` users at a time with a yield between
slices. On a thread they shared the GIL with the loop and Faust's consumer thread, and that
contention, not the work, held a worker to about 870 of 1,000 events/s (docs/BENCHMARKS.md).
While the stream is behind (events wait in Kafka after the batch it applied), each slice waits
for the stream's next batch instead: the table state, which is what survives a crash,
catches up first, and a user touched again while waiting is re-ranked once, not once per event.
Faust fills a batch in the background, between turns of the loop; yielding only when a whole
batch waited let slices run while the next one filled, and at 1,000 events/s the stream fell
behind (freshness p50 1.7 s against 48 ms when any waiting event holds the slices back).
While a whole batch or more waits (a backlog: a restart, a replay, a burst), ticks also start
at most every ``BACKLOG_TICK`` seconds.
Decoding and indexing a new model, which are rare and mostly numpy and hnswlib, stay on the
solver thread.

Models are fitted by the trainer (``app.trainer``) and published in Redis;
:meth:`ListRefresher.sync_model` switches to a new version atomically, and
:meth:`ListRefresher.sync_catalogue` to a new catalogue snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Protocol

import numpy as np
from redis.exceptions import RedisError

from app import ranker, serving
from app.models import COUNT, UserAction, UserState, empty_state
from app.ops import metrics
from app.popularity import Trending, accumulators
from app.serving import CatalogueSnapshot, ServedList, ServingRules, UserHistory
from app.settings import Settings
from app.stores import Stores
from app.stores.lists import encode_list
from app.stores.model import Published

log = logging.getLogger(__name__)

MAX_STALE = 100_000
MAX_TICK_USERS = 2_000
"""Users one tick re-ranks at most: a tick writes its lists together, so this bounds the wait
for the first of them and the lists held, when a backlog has touched many users."""
NEVER = (0.0, 0)
"""The entry of an item the user's state does not hold (weight, count)."""
REFRESH_BUDGET = 0.05
"""Seconds of list work, while the stream is behind, between two of its batches. Waiting for a
batch after every slice instead made a tick's wait grow with its users: in the 30-minute soak
at 1,000 events/s, ticks of about 1,500 users waited for some 47 batches, and freshness p99
went from 90 ms to 1.6 s at minute 7 and never came back."""
BACKLOG_TICK = 0.5
"""Seconds from the start of one tick to the next while a backlog (a whole batch,
``batch_events``, or more) waits in Kafka. Ticking at once, a worker draining a backlog ticked
about once per 110 events, and a tick's fixed cost (the popularity flush, the trending read,
one Redis pipeline) took about 9% of its loop (py-spy); every event is late by then, and the
table state, which is what survives a crash, catches up first."""
STREAM_WAIT = 0.5
"""Seconds a slice of lists waits for the stream's next batch while the stream is behind; a
stream that has nothing more in that time is no longer behind."""


class StateSource(Protocol):
    """Read access to the per-user table state this worker holds."""

    def get(self, user_id: str) -> UserState | None: ...

    def items(self) -> Iterable[tuple[str, UserState]]: ...


def history(state: UserState, impression_limit: int) -> UserHistory:
    """What the serving policy reads of a user's table state; ``impression_limit`` is the
    setting of that name (0: nothing is demoted)."""
    return UserHistory(
        state.event_count,
        state.weights(),
        frozenset(state.hidden),
        state.demoted(impression_limit),
    )


UserFactorsSource = Callable[[str], Awaitable[ranker.UserFactors | None]]
"""The user factors published with a snapshot (``app.neighbours.FittedUsers.of``)."""


class ListRefresher:
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        states: StateSource,
        user_factors: UserFactorsSource | None = None,
    ) -> None:
        self.settings = settings
        self.rules = ServingRules.of(settings)
        self.experiment = settings.experiment
        self.arms = metrics.ArmTally()
        self._user_factors = user_factors
        self.fitted: ranker.UserFactors | None = None
        """The served snapshot's fitted user vectors, held while an arm serves without fold-in."""
        self.stores = stores
        self.states = states
        self.model: ranker.FactorModel | None = None
        self.published: Published | None = None
        self.catalogue = CatalogueSnapshot()
        self.live = metrics.LiveHitRate()
        self._touched: dict[str, UserHistory] = {}
        self._changed: dict[str, UserState] = {}
        self._since: dict[str, float] = {}
        self._stale: dict[str, None] = {}
        self._erased: set[str] = set()
        self._popularity = accumulators(settings.half_lives)
        self._solver = ThreadPoolExecutor(1, thread_name_prefix="fold-in")
        self._write_lock = asyncio.Lock()
        self._work_waiting = asyncio.Event()
        self._records_waiting = 0  # in Kafka after the stream's last batch
        self._tick_started = 0.0
        self._batch_applied = asyncio.Event()
        self._stream_turn = time.monotonic()  # when the stream last applied a batch

    @property
    def model_version(self) -> str | None:
        return None if self.model is None else self.model.version

    @property
    def touched(self) -> Mapping[str, UserHistory]:
        """The users whose lists the next tick rewrites, with what the policy reads of them."""
        self._settle()
        return self._touched

    def record(
        self, action: UserAction, weight: float, state: UserState, received_at: float | None
    ) -> None:
        """Note an applied event and the user's new state: the user needs a new list, the
        item gains popularity. Keeping the user's history saves the tick a table read per
        user; the earliest unflushed Kafka timestamp (seconds) per user measures freshness.

        A history holds only strings and numbers, which Python's garbage collector does not
        track: a backlog can leave a million users waiting, and a million held table records
        made every full collection (and Faust's own, on each rebalance) take seconds, long
        enough for Kafka to drop the worker from its group."""
        self.touch(action.user_id, state)
        if received_at is not None:
            self._since.setdefault(action.user_id, received_at)
        if weight > 0:
            if state.items.get(action.item_id, NEVER)[COUNT] == 1:
                self._live_trial(action.user_id, action.item_id)
            if action.recommendation_id is not None:
                answered = self.experiment.answered_arm(action.recommendation_id)
                if answered is not None:
                    self.arms.count(answered.name, "answered")
        for popularity in self._popularity.values():
            popularity.add(action.item_id, weight, action.timestamp)

    def _live_trial(self, user_id: str, item_id: str) -> None:
        """A user's first event on an item: was it in the top 10 last written for them? Only
        first events are trials, as in the streaming evaluation's probes: an item the user
        already has is never listed for them, so a repeat purchase could only ever miss."""
        hit = self.live.test(user_id, item_id)
        if hit is not None:
            arm = self.experiment.arm_of(user_id).name
            self.arms.count(arm, "trials")
            if hit:
                self.arms.count(arm, "hits")

    def history(self, state: UserState) -> UserHistory:
        """What the serving policy reads of a user's table state, under these settings."""
        return history(state, self.settings.impression_limit)

    def touch(self, user_id: str, state: UserState) -> None:
        """The user's state changed: rank them on the next tick, from this state.

        The state is held until the stream's batch is applied and only then read into a
        history, once per user and batch rather than once per event (a history copies the
        user's weights); a batch is bounded, so few table records are held at a time."""
        self._changed[user_id] = state
        self._work_waiting.set()

    def _settle(self) -> None:
        """Read the states changed since the last call into the histories the ticks rank."""
        for user_id, state in self._changed.items():
            self._touched[user_id] = self.history(state)
        self._changed.clear()

    def forget(self, user_id: str) -> None:
        """An erased user: nothing held of them is ranked, no list is written for them, and
        their cached list is deleted on the next tick (after any write already under way)."""
        self._changed.pop(user_id, None)
        self._touched.pop(user_id, None)
        self._since.pop(user_id, None)
        self._stale.pop(user_id, None)
        self.live.forget(user_id)
        self._erased.add(user_id)
        self._work_waiting.set()

    def batch_applied(self, waiting: int) -> None:
        """The stream applied a batch, after which ``waiting`` records wait in Kafka."""
        self._settle()
        self._records_waiting = waiting
        self._stream_turn = time.monotonic()
        self._batch_applied.set()

    async def _yield_to_the_stream(self) -> None:
        """Between two slices of lists: let the agent and the web views run, and while the
        stream is behind and has not applied a batch for ``REFRESH_BUDGET``, let it apply its
        next batch first."""
        if not self._records_waiting or time.monotonic() - self._stream_turn < REFRESH_BUDGET:
            await asyncio.sleep(0)
            return
        self._batch_applied.clear()
        try:
            async with asyncio.timeout(STREAM_WAIT):
                await self._batch_applied.wait()
        except TimeoutError:
            self._records_waiting = 0

    def mark_stale(self, user_id: str) -> None:
        """A served list came from an older model: re-rank it on a coming tick.

        Lists are re-ranked for a new model when they are read or their user acts, not all at
        once after a fit, so a new model costs nothing for users who are not active.
        """
        if len(self._stale) < MAX_STALE:
            self._stale[user_id] = None

    async def refresh_continuously(self) -> None:
        """Tick whenever a user was touched since the last tick, at once (during a backlog,
        ``BACKLOG_TICK`` after the last tick began); otherwise every ``fold_in_interval``
        seconds (for stale lists). A tick Redis fails is retried after ``fold_in_interval``,
        with its work kept."""
        interval = self.settings.fold_in_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._work_waiting.wait()
            if self._records_waiting >= self.settings.batch_events:
                await asyncio.sleep(self._tick_started + BACKLOG_TICK - time.monotonic())
            self._work_waiting.clear()
            self._tick_started = time.monotonic()
            try:
                await self.tick()
            except (RedisError, OSError) as error:
                log.warning("refresh postponed, Redis unavailable: %s", error)
                await asyncio.sleep(interval)

    async def tick(self) -> None:
        """Flush popularity, refresh the longest-waiting touched users, at most
        ``MAX_TICK_USERS`` (the rest are left for the next tick, at once), then stale ones.

        When Redis fails midway, the popularity and users taken are put back for the next tick.
        """
        popularity = self._popularity
        self._popularity = accumulators(popularity)
        self._settle()
        users = self._take_touched(MAX_TICK_USERS)
        since = {user_id: self._since.pop(user_id) for user_id in users if user_id in self._since}
        for user_id in list(islice(self._stale, self.settings.refresh_batch)):
            del self._stale[user_id]
            if user_id not in users and (state := self.states.get(user_id)) is not None:
                users[user_id] = self.history(state)
        try:
            for increments in popularity.values():
                await self.stores.popularity.add(increments)
            if users:
                await self.refresh(users)
            await self._delete_erased_lists()
            live = self.live.take_by_model()
            if live:
                try:
                    await self.stores.models.add_live_trials(live)
                except Exception:
                    self.live.put_back(live)
                    raise
            arms = self.arms.take()
            if arms:
                try:
                    await self.stores.experiments.add(self.experiment.name, arms)
                except Exception:
                    self.arms.put_back(arms)
                    raise
        except Exception:
            for user_id, received_at in since.items():
                self._since.setdefault(user_id, received_at)
            for half_life, increments in popularity.items():
                self._popularity[half_life].merge(increments)
            for user_id, user in users.items():
                self._touched.setdefault(user_id, user)
            raise
        written = time.time()
        for received_at in since.values():
            metrics.freshness_seconds.observe(max(0.0, written - received_at))
        if self._touched:
            self._work_waiting.set()

    async def _delete_erased_lists(self) -> None:
        """Delete the cached lists of the users erased so far; kept for the next tick if Redis
        fails. Under the write lock, so no list computed before an erasure lands after it."""
        if not self._erased:
            return
        async with self._write_lock:
            erased, self._erased = self._erased, set()
            try:
                await self.stores.lists.delete(erased)
            except Exception:
                self._erased |= erased
                raise

    def _take_touched(self, limit: int) -> dict[str, UserHistory]:
        """Remove and return the ``limit`` users touched longest ago, with their histories."""
        if len(self._touched) <= limit:
            taken, self._touched = self._touched, {}
            return taken
        return {
            user_id: self._touched.pop(user_id) for user_id in list(islice(self._touched, limit))
        }

    async def sync_model(self) -> bool:
        """Switch to the published current model if it changed; returns whether it did.

        On the same snapshot only the new deltas are read and applied (a delta's items join the
        candidate index); a large new snapshot gets its index built. Decoding and indexing run
        on the solver thread."""
        loop = asyncio.get_running_loop()

        def offload(function: Callable[..., Published], *args: object) -> Awaitable[Published]:
            return loop.run_in_executor(self._solver, function, *args)

        published = await self.stores.models.sync(self.published, offload)
        if published is None:
            return False
        indexed = await loop.run_in_executor(self._solver, self.indexed, published.model)
        published = dataclasses.replace(published, model=indexed)
        if self.experiment.batch_arms and self._user_factors is not None:
            self.fitted = await self._user_factors(published.snapshot)
        self.published, self.model = published, published.model
        meta = published.meta
        metrics.model.info(
            {
                "version": published.version,
                "snapshot": published.snapshot,
                "deltas": str(published.deltas),
            }
        )
        if "fit_seconds" in meta["metrics"]:
            metrics.retrain_seconds.set(meta["metrics"]["fit_seconds"])
        log.info("serving model %s: %s", published.version, meta["metrics"])
        return True

    def indexed(self, model: ranker.FactorModel) -> ranker.FactorModel:
        """The model with its candidate index when it is large enough, extending the served
        model's index when the new one only appends items (slow: the solver thread's work)."""
        return ranker.with_candidate_index(model, self.settings.ann_min_items, self.model)

    async def sync_catalogue(self) -> bool:
        """Rebuild the catalogue snapshot when the catalogue changed; returns whether it did."""
        catalogue = self.stores.catalogue
        version = await catalogue.version()
        if version == self.catalogue.version:
            return False
        records = await catalogue.all()
        loop = asyncio.get_running_loop()
        self.catalogue = await loop.run_in_executor(
            self._solver, CatalogueSnapshot.of, records, version
        )
        log.info(
            "catalogue version %d: %d items, %d unavailable",
            version,
            len(records),
            len(self.catalogue.unavailable),
        )
        return True

    def lists(self, users: Mapping[str, UserHistory], popular: Trending) -> list[ServedList]:
        """These users' lists under the serving policy, each as the user's arm serves it:
        folded in, or (``fold_in=off``) by their vector of the last full fit."""
        if not self.experiment.batch_arms:
            return serving.user_lists(
                self.model, list(users.values()), self.catalogue, popular, self.rules
            )
        fold_in = {user_id: self.experiment.arm_of(user_id).fold_in for user_id in users}
        folded = [user_id for user_id, on in fold_in.items() if on]
        batch = [user_id for user_id, on in fold_in.items() if not on]
        lists: dict[str, ServedList] = {}
        for group, vectors in ((folded, None), (batch, self.fitted_vectors(batch))):
            ranked = serving.user_lists(
                self.model,
                [users[user_id] for user_id in group],
                self.catalogue,
                popular,
                self.rules,
                vectors=vectors,
            )
            lists.update(zip(group, ranked, strict=True))
        return [lists[user_id] for user_id in users]

    def fitted_vectors(self, user_ids: Sequence[str]) -> np.ndarray | None:
        """The users' unit vectors of the last full fit, a zero row for a user it did not
        know (who then gets no personal list); None without a model."""
        if self.model is None:
            return None
        vectors = np.zeros((len(user_ids), self.model.item_factors.shape[1]), dtype=np.float32)
        fitted = self.fitted
        if fitted is not None:
            for row, user_id in enumerate(user_ids):
                position = fitted.positions.get(user_id)
                if position is not None:
                    vectors[row] = fitted.unit[position]
        return vectors

    def session_list(self, actions: Sequence[UserAction], popular: Trending) -> ServedList:
        """The list of an anonymous visitor who did ``actions`` (oldest first): the one a user
        who did the same gets, their vector folded in on the fly. Nothing is stored."""
        state, weight, cap = empty_state(), self.settings.weight, self.settings.max_items_per_user
        for offset, action in enumerate(actions):
            state = state.with_event(action, weight(action.action), offset, None, cap)
        (entry,) = serving.user_lists(
            self.model, [self.history(state)], self.catalogue, popular, self.rules
        )
        return entry

    async def refresh(self, histories: Mapping[str, UserHistory]) -> dict[str, ServedList]:
        """Recompute and cache these users' lists from their histories; returns them by user."""
        async with self._write_lock:
            started = time.perf_counter()
            popular = await self.trending()
            users, step = list(histories), self.settings.refresh_slice
            lists: dict[str, ServedList] = {}
            for start in range(0, len(users), step):
                if start:
                    await self._yield_to_the_stream()
                chunk = {user_id: histories[user_id] for user_id in users[start : start + step]}
                lists.update(zip(chunk, self.lists(chunk, popular), strict=True))
            for user_id in self._erased.intersection(lists):  # erased while being ranked
                del lists[user_id]
            await self.stores.lists.put_lists(
                {user_id: encode_list(entry) for user_id, entry in lists.items()}
            )
            metrics.fold_in_seconds.observe(time.perf_counter() - started)
            metrics.fold_in_batch_users.observe(len(lists))
            for user_id, entry in lists.items():
                ranked_by = entry["model_version"] if entry["source"] == "personal" else None
                top = (item for item, _ in entry["items"][: metrics.TOP_K])
                self.live.written(user_id, top, ranked_by)
            return lists

    async def trending(self, half_life: float | None = None, depth: int | None = None) -> Trending:
        """The popular items lists are chosen from, read at the time the policy reads them at."""
        return await self.stores.popularity.trending(
            depth or self.rules.popular_depth,
            half_life or self.rules.popularity_half_life,
            self.rules.popularity_clock,
            time.time(),
        )

    def popular_list(
        self, popular: Trending, seen: Iterable[str], half_life: float | None = None
    ) -> ServedList:
        """Popular items for somebody who has seen ``seen``, under the serving policy."""
        return serving.popular_list(
            popular, seen, self.catalogue, self.rules, time.time(), self.model_version, half_life
        )

    async def recommend_now(self, user_id: str) -> ServedList:
        """The miss path: compute (and cache) a held user's list; popular for unknown users."""
        state = self.states.get(user_id)
        if state is not None:
            return (await self.refresh({user_id: self.history(state)}))[user_id]
        return self.popular_list(await self.trending(), ())

    def close(self) -> None:
        self._solver.shutdown(wait=False, cancel_futures=True)
