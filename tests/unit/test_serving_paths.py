"""Every path that computes a list in the worker serves what ``serving.user_lists`` (the one
policy) chooses: the refresher's computation and the Redis-down path, with no Redis at all."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import types
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from app import ranker, serving
from app.actions import IMPRESSION
from app.models import COUNT, ItemRecord, UserAction, UserState, empty_state
from app.popularity import Trending
from app.redis_recovery import RedisRecovery
from app.refresher import ListRefresher, history
from app.serving import CatalogueSnapshot, ServedList, UserHistory
from app.settings import Settings
from app.stores import Stores

SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0", cache_size=5)
WHEN = 1_700_000_000.0
NOW = time.time()
SOLD_OUT = "h"
"""In the model, the most popular item and like the content user's item, but unavailable."""
CATALOGUE = [
    ItemRecord("a", title="red running shoes"),
    ItemRecord("b", title="red wool hat"),
    ItemRecord("c", title="blue running shoes"),
    ItemRecord("d", title="green scarf"),
    ItemRecord("e", title="blue wool scarf"),
    ItemRecord("f", title="yellow umbrella"),
    ItemRecord("g", title="black boots"),
    ItemRecord(SOLD_OUT, title="red running shoes", available=False),
]
ROWS = [
    {"a": 2.0, "b": 1.0, "c": 1.0, "h": 2.0},
    {"a": 1.0, "c": 2.0, "h": 1.0},
    {"b": 2.0, "d": 1.0, "e": 1.0},
    {"d": 2.0, "e": 2.0, "f": 1.0},
    {"f": 2.0, "g": 1.0},
    {"a": 1.0, "g": 2.0, "h": 1.0},
    {"c": 1.0, "e": 1.0, "g": 1.0},
    {"b": 1.0, "f": 1.0, "h": 2.0},
]
POPULAR = Trending(
    sorted(
        (
            (item, ranker.decayed_log_score(weight, NOW, SETTINGS.popularity_half_life))
            for item, weight in {"h": 9.0, "a": 5.0, "d": 4.0, "f": 3.0, "b": 2.0, "g": 1.0}.items()
        ),
        key=lambda entry: -entry[1],
    ),
    NOW,
)


def state_of(*items: str) -> UserState:
    """A user's table state after one click on each of these items."""
    state = empty_state()
    for offset, item in enumerate(items):
        state = state.with_action(UserAction("u", item, "click", WHEN), 1.0, offset, None)
    return state


STATES = {
    "personal": state_of("a", "b", "d", "b", "d"),  # 5 events: more than content_max_events
    "content": state_of("a"),  # 1 event: the catalogue matches it
}
HISTORIES = {user_id: history(state, impression_limit=0) for user_id, state in STATES.items()}


class HeldStates:
    """The table states a worker holds (the refresher's StateSource), in a dict."""

    def __init__(self, states: dict[str, UserState]) -> None:
        self.states = states

    def get(self, user_id: str) -> UserState | None:
        return self.states.get(user_id)

    def items(self) -> Iterator[tuple[str, UserState]]:
        return iter(self.states.items())


@pytest.fixture(scope="module")
def model() -> ranker.FactorModel:
    params = ranker.AlsParams(factors=4, regularization=0.1, alpha=2.0, iterations=5, threads=1)
    return ranker.fit(ROWS, params, "v1", WHEN)


@pytest.fixture
def refresher(model) -> Iterator[ListRefresher]:
    stores = Stores.of(Redis.from_url(SETTINGS.redis_url), SETTINGS)  # unreachable, never used
    refresher = ListRefresher(SETTINGS, stores, HeldStates(STATES))
    refresher.model = model
    refresher.catalogue = CatalogueSnapshot.of(CATALOGUE, 1)
    yield refresher
    refresher.close()


@pytest.fixture
def recovery(refresher) -> RedisRecovery:
    recovery = RedisRecovery(SETTINGS, refresher.stores, refresher)
    recovery.popular[SETTINGS.popularity_half_life] = POPULAR  # as last read from Redis
    return recovery


def policy(refresher: ListRefresher, user: str) -> ServedList:
    """The list ``serving.user_lists`` chooses for a held user."""
    state = STATES[user]
    (entry,) = serving.user_lists(
        refresher.model,
        [UserHistory(state.event_count, state.weights())],
        refresher.catalogue,
        POPULAR,
        refresher.rules,
        time.time(),
    )
    return entry


def assert_same_list(served: ServedList, expected: ServedList) -> None:
    """Same items in the same order from the same source and model; scores equal up to the
    popularity decay between the two computations' clocks."""
    assert (served["source"], served["model_version"]) == (
        expected["source"],
        expected["model_version"],
    )
    assert [item for item, _ in served["items"]] == [item for item, _ in expected["items"]]
    scores = [score for _, score in served["items"]]
    assert scores == pytest.approx([score for _, score in expected["items"]], rel=1e-6)


@pytest.mark.parametrize("user", ["personal", "content"])
def test_the_refreshers_list_is_the_policys(refresher, user):
    (served,) = refresher.lists({user: refresher.history(STATES[user])}, POPULAR)

    assert served["source"] == user
    assert served["items"]
    assert_same_list(served, policy(refresher, user))


def test_the_personal_list_is_the_models_ranking_of_unseen_available_items(refresher, model):
    (served,) = refresher.lists({"personal": refresher.history(STATES["personal"])}, POPULAR)

    [ranked] = ranker.recommend(model, [STATES["personal"].weights()], 5, exclude={SOLD_OUT})
    assert served["items"] == ranked
    assert {item for item, _ in ranked} == {"c", "e", "f", "g"}


def test_an_unavailable_item_is_never_listed(refresher, recovery):
    served = [
        *refresher.lists(HISTORIES, POPULAR),
        *(recovery.list_without_redis(user) for user in [*STATES, "nobody"]),
    ]

    assert [entry["source"] for entry in served] == ["personal", "content"] * 2 + ["popular"]
    for entry in served:
        assert entry["items"] and SOLD_OUT not in {item for item, _ in entry["items"]}


@pytest.mark.parametrize("user", ["personal", "content"])
def test_without_redis_a_held_user_gets_the_refreshers_list(refresher, recovery, user):
    (refreshed,) = refresher.lists({user: refresher.history(STATES[user])}, POPULAR)

    assert_same_list(recovery.list_without_redis(user), refreshed)


def test_without_redis_an_unknown_user_gets_the_popular_list(refresher, recovery):
    served = recovery.list_without_redis("nobody")

    expected = serving.popular_list(
        POPULAR, (), refresher.catalogue, refresher.rules, time.time(), "v1"
    )
    assert_same_list(served, expected)
    assert [item for item, _ in served["items"]] == ["a", "d", "f", "b", "g"]


class WrittenLists:
    """Stands in for the Redis list and popularity stores of one refresh (no I/O)."""

    def __init__(self) -> None:
        self.written: dict[str, bytes] = {}

    async def trending(self, depth: int, half_life: float, clock: str, now: float) -> Trending:
        return POPULAR

    async def put_lists(self, encoded: dict[str, bytes]) -> None:
        self.written.update(encoded)

    async def add(self, increments: object) -> None:
        """Popularity increments are not looked at here."""


def refresher_writing_to(written: WrittenLists, users: dict[str, UserState], **settings: int):
    stores = types.SimpleNamespace(popularity=written, lists=written)
    return ListRefresher(dataclasses.replace(SETTINGS, **settings), stores, HeldStates(users))


def slices_logged(refresher: ListRefresher) -> list[str]:
    """A log that gets "slice of N" each time the refresher computes the lists of N users."""
    order: list[str] = []
    computed = refresher.lists

    def lists(users, popular):
        order.append(f"slice of {len(users)}")
        return computed(users, popular)

    refresher.lists = lists
    return order


async def test_a_refresh_yields_to_the_event_loop_between_slices_of_users(model):
    fake = WrittenLists()
    users = {f"u{n}": state_of("a", "b", "d", "b", "d") for n in range(5)}
    refresher = refresher_writing_to(fake, users, refresh_slice=2)
    refresher.model = model
    order = slices_logged(refresher)

    async def other_task() -> None:
        while True:
            order.append("other task")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    try:
        await refresher.refresh({user: refresher.history(state) for user, state in users.items()})
    finally:
        other.cancel()
        refresher.close()

    assert order[1:] == ["slice of 2", "other task", "slice of 2", "other task", "slice of 1"]
    assert sorted(fake.written) == sorted(users)


async def test_while_the_stream_is_behind_a_slice_past_the_budget_waits_for_its_next_batch(
    model, monkeypatch
):
    monkeypatch.setattr("app.refresher.REFRESH_BUDGET", 0.0)
    users = {f"u{n}": state_of("a", "b", "d", "b", "d") for n in range(5)}
    refresher = refresher_writing_to(WrittenLists(), users, refresh_slice=2)
    refresher.model = model
    order = slices_logged(refresher)

    async def stream() -> None:
        """Batches with more waiting behind them, each taking a few turns of the loop."""
        while True:
            for _ in range(3):
                await asyncio.sleep(0)
            order.append("batch")
            refresher.batch_applied(waiting=1)

    refresher.batch_applied(waiting=1)
    batches = asyncio.create_task(stream())
    try:
        await refresher.refresh({user: refresher.history(state) for user, state in users.items()})
    finally:
        batches.cancel()
        refresher.close()

    assert order == ["slice of 2", "batch", "slice of 2", "batch", "slice of 1"]


async def test_within_the_budget_slices_do_not_wait_for_a_stream_that_is_behind(model, monkeypatch):
    monkeypatch.setattr("app.refresher.REFRESH_BUDGET", 10.0)
    users = {f"u{n}": state_of("a", "b", "d", "b", "d") for n in range(5)}
    refresher = refresher_writing_to(WrittenLists(), users, refresh_slice=2)
    refresher.model = model
    order = slices_logged(refresher)
    refresher.batch_applied(waiting=1)  # and no batch comes while the lists are computed
    started = time.monotonic()
    try:
        await refresher.refresh({user: refresher.history(state) for user, state in users.items()})
    finally:
        refresher.close()

    assert order == ["slice of 2", "slice of 2", "slice of 1"]
    assert time.monotonic() - started < 0.25, "no STREAM_WAIT (0.5 s) was spent"


async def test_a_stream_with_nothing_more_to_apply_is_no_longer_waited_for(model, monkeypatch):
    monkeypatch.setattr("app.refresher.STREAM_WAIT", 0.2)
    monkeypatch.setattr("app.refresher.REFRESH_BUDGET", 0.0)
    users = {f"u{n}": state_of("a", "b") for n in range(5)}
    written = WrittenLists()
    refresher = refresher_writing_to(written, users, refresh_slice=1)
    refresher.model = model
    refresher.batch_applied(waiting=1)  # more was waiting, and then nothing came
    started = time.monotonic()
    try:
        await refresher.refresh({user: refresher.history(state) for user, state in users.items()})
    finally:
        refresher.close()

    assert time.monotonic() - started < 0.4  # one wait, not one per slice (0.8 s)
    assert sorted(written.written) == sorted(users)


async def tick_times(waiting: int, seconds: float) -> list[float]:
    """When the refresher's ticks start while a user is touched every 10 ms for ``seconds``,
    the stream having left ``waiting`` records in Kafka after its last batch (of 10)."""
    refresher = refresher_writing_to(WrittenLists(), {}, batch_events=10)
    started: list[float] = []

    async def tick() -> None:
        started.append(time.monotonic())

    refresher.tick = tick
    refresher.batch_applied(waiting=waiting)
    ticking = asyncio.create_task(refresher.refresh_continuously())
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            refresher.touch("u", state_of("a"))
            await asyncio.sleep(0.01)
    finally:
        ticking.cancel()
        refresher.close()
    return started


async def test_while_a_backlog_waits_in_kafka_ticks_start_backlog_tick_apart(monkeypatch):
    monkeypatch.setattr("app.refresher.BACKLOG_TICK", 0.2)

    started = await tick_times(waiting=10, seconds=0.7)

    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert 3 <= len(started) <= 4 and min(gaps) >= 0.19


async def test_with_less_than_a_batch_waiting_a_touched_user_is_ticked_at_once(monkeypatch):
    monkeypatch.setattr("app.refresher.BACKLOG_TICK", 0.2)

    started = await tick_times(waiting=9, seconds=0.7)

    assert len(started) >= 20  # about one per touch, 10 ms apart


async def test_a_tick_rewrites_the_users_touched_longest_ago_and_leaves_the_rest(
    model, monkeypatch
):
    monkeypatch.setattr("app.refresher.MAX_TICK_USERS", 3)
    users = {f"u{n}": state_of("a", "b") for n in range(5)}
    written = WrittenLists()
    refresher = refresher_writing_to(written, users)
    refresher.model = model
    for user_id, state in users.items():
        refresher.record(UserAction(user_id, "a", "click", WHEN), 1.0, state, WHEN)
    try:
        await refresher.tick()
        first = sorted(written.written)
        await refresher.tick()
    finally:
        refresher.close()

    assert first == ["u0", "u1", "u2"]
    assert sorted(written.written) == sorted(users) and not refresher.touched


def test_every_list_says_how_many_of_its_users_events_it_reflects(refresher, recovery):
    served = [*refresher.lists(HISTORIES, POPULAR), recovery.list_without_redis("nobody")]
    refresher.model = None
    (popular,) = refresher.lists({"personal": HISTORIES["personal"]}, POPULAR)

    assert [(entry["source"], entry["event_count"]) for entry in [*served, popular]] == [
        ("personal", 5),
        ("content", 1),
        ("popular", 0),
        ("popular", 5),
    ]


@pytest.mark.parametrize("user", ["personal", "content"])
def test_a_sessions_list_is_the_list_of_a_user_who_did_the_same(refresher, user):
    clicks = [
        UserAction("", item_id, "click", WHEN)
        for item_id, entry in STATES[user].items.items()
        for _ in range(entry[COUNT])
    ]

    served = refresher.session_list(clicks, POPULAR)

    assert served["source"] == user
    assert served["event_count"] == STATES[user].event_count
    assert_same_list(served, policy(refresher, user))


@pytest.mark.parametrize("user", ["personal", "content", "popular"])
def test_an_item_the_user_hid_leaves_their_list_and_nothing_else_does(refresher, user):
    state = STATES["personal" if user == "popular" else user]
    if user == "popular":
        refresher.model = None
    (shown,) = refresher.lists({user: refresher.history(state)}, POPULAR)
    top = shown["items"][0][0]

    hiding = state.with_hidden([top], hidden=True, offset=99)
    (served,) = refresher.lists({user: refresher.history(hiding)}, POPULAR)

    assert served["source"] == user
    assert {item for item, _ in served["items"]} == {item for item, _ in shown["items"]} - {top}


def shown_times(state: UserState, item_id: str, times: int) -> UserState:
    """The state after the item was shown ``times`` more times (``impression`` actions)."""
    for offset in range(times):
        action = UserAction("u", item_id, IMPRESSION, WHEN)
        state = state.with_impression(action, 100 + offset, None)
    return state


@pytest.mark.parametrize("user", ["personal", "content", "popular"])
def test_an_item_shown_the_limit_times_goes_after_every_other_candidate(refresher, user):
    state = STATES["personal" if user == "popular" else user]
    if user == "popular":
        refresher.model = None
    (shown,) = refresher.lists({user: refresher.history(state)}, POPULAR)
    listed = [item for item, _ in shown["items"]]

    showing = shown_times(state, listed[0], SETTINGS.impression_limit)
    (served,) = refresher.lists({user: refresher.history(showing)}, POPULAR)
    demoted = [item for item, _ in served["items"]]

    assert served["source"] == user
    assert demoted[: len(listed) - 1] == listed[1:], "the others move up, in their order"
    assert listed[0] not in demoted[:-1], "it is last, or out of a full list"


def test_an_item_shown_fewer_times_than_the_limit_keeps_its_place(refresher):
    state = STATES["personal"]
    (shown,) = refresher.lists({"personal": refresher.history(state)}, POPULAR)

    showing = shown_times(state, shown["items"][0][0], SETTINGS.impression_limit - 1)
    (served,) = refresher.lists({"personal": refresher.history(showing)}, POPULAR)

    assert served["items"] == shown["items"]


def test_demote_moves_demoted_items_after_the_others_and_cuts_to_n():
    items = [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)]

    assert serving.demote(items, {"a", "c"}, 4) == [("b", 3.0), ("d", 1.0), ("a", 4.0), ("c", 2.0)]
    assert serving.demote(items, {"a"}, 3) == [("b", 3.0), ("c", 2.0), ("d", 1.0)]
    assert serving.demote(items, set(), 2) == items[:2]
