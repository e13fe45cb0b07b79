"""Streaming evaluation: the stream and its probes, the simulated variants, the scoring, and
the calibration of the pipeline-agreement test (tests/integration/test_streaming_eval.py)."""

from __future__ import annotations

import math
import random

import pytest

from app import ranker, serving
from app.datasets import Event, read_events
from app.evaluation.streaming import (
    K,
    Outcome,
    Stream,
    agreement,
    daily_series,
    find_probes,
    simulate,
    split_stream,
    summarize,
    top_unseen,
)
from app.models import ItemRecord
from app.popularity import Popularity
from app.retraining import RetrainPolicy, als_params
from app.serving import CatalogueSnapshot, ServedList, ServingRules, UserHistory
from app.settings import Settings
from harness.data import SAMPLE_EVENTS, STREAMING_REPLAY_LIMIT

SETTINGS = Settings(als_factors=8, als_iterations=10, als_regularization=0.1, als_alpha=10.0)
NO_REFIT = RetrainPolicy(growth=0.0, interval=0.0, new_item_interval=0.0)
CUT = 50.0


def buy(user: str, item: str, timestamp: float, action: str = "purchase") -> Event:
    return Event(user, item, action, float(timestamp))


def two_groups() -> list[Event]:
    """Users of group a buy 6 of the items a0-a9, users of group b 6 of b0-b9 (t < CUT)."""
    rng = random.Random(3)
    return [
        buy(f"{group}{user}", f"{group}{item}", rng.uniform(0, CUT - 1))
        for group in "ab"
        for user in range(20)
        for item in rng.sample(range(10), 6)
    ]


# -- the stream and its probes ----------------------------------------------------------------


def test_the_stream_is_sorted_by_time_and_cut_at_the_warm_up_quantile():
    events = [buy("u", f"i{t}", t) for t in (5, 1, 9, 3, 7, 2, 8, 4, 6, 10)]
    stream = split_stream(events, 0.8)
    assert stream.cut == pytest.approx(8.2)  # numpy's linear quantile of 1..10
    assert [e.timestamp for e in stream.warmup] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [e.timestamp for e in stream.replay] == [9, 10]


def test_equal_timestamps_keep_their_file_order():
    events = [buy("u", "b", 1), buy("u", "a", 1), buy("u", "c", 0)]
    stream = split_stream(events, 0.5)
    assert [e.item_id for e in stream.warmup + stream.replay] == ["c", "b", "a"]


def test_a_probe_is_a_positive_event_of_a_user_with_history_on_an_item_new_to_them():
    stream = Stream(
        warmup=[buy("u1", "i1", 0)],
        replay=[
            buy("u1", "i2", 1),  # probe
            buy("u1", "i2", 2),  # not new to u1 any more
            buy("u1", "i3", 3, "return"),  # negative weight
            buy("u2", "i1", 4),  # u2 has no history yet
            buy("u2", "i4", 5),  # probe: u2 has history now
            buy("u1", "i5", 6, "view"),  # probe: a view weighs 0.5
            buy("u1", "i1", 7),  # bought in the warm-up
        ],
        cut=0.5,
    )
    assert find_probes(stream, SETTINGS.weight) == [0, 4, 5]
    assert find_probes(stream, SETTINGS.weight, limit=5) == [0, 4]


# -- popularity -------------------------------------------------------------------------------


def test_popularity_ranks_by_decayed_weight_with_ties_in_reverse_id_order():
    day = 86_400.0
    popularity = Popularity(half_life=day)
    popularity.add("a", 2.0, 0.0)
    popularity.add("b", 1.0, day)  # one half-life later: worth as much as a now
    popularity.add("c", 1.0, 0.0)
    popularity.add("c", 1.0, 0.0)  # two events add up: 2 at time 0 ...
    popularity.add("c", -2.0, day)  # ... and a return does not subtract
    popularity.add("d", 1.0, 0.0)
    assert [item for item, _ in popularity.top(4)] == ["c", "b", "a", "d"]
    assert top_unseen(popularity, {"c", "a"}, 2) == ["b", "d"]
    # The product's popular list reads only the top ``popular_depth`` items.
    rules = ServingRules(list_length=2)
    popular = serving.popular_list(
        popularity.trending(2, "stream", day), {"c"}, CatalogueSnapshot(), rules, day, None
    )
    assert [item for item, _ in popular["items"]] == ["b"]


# -- the simulation ---------------------------------------------------------------------------


def test_lists_are_read_before_the_probe_event_is_fed():
    # u has seen every item but x9; had x9 been fed first, it would be filtered out.
    warmup = two_groups() + [buy("u", f"a{i}", 1) for i in range(10)]
    warmup += [buy(f"x-user{j}", f"x{i}", 2) for j in range(3) for i in range(10)]
    warmup += [buy("u", f"b{i}", 3) for i in range(10)] + [buy("u", f"x{i}", 4) for i in range(9)]
    stream = Stream(warmup, [buy("u", "x9", CUT + 1)], CUT)
    run = simulate(stream, SETTINGS, NO_REFIT)
    (outcome,) = run.outcomes
    assert {variant: outcome.lists[variant] for variant in outcome.lists} == {
        "product": ["x9"],
        "no-refit": ["x9"],
        "frozen": ["x9"],
        "popularity": ["x9"],
    }
    assert summarize(run.outcomes, ("product",))["variants"]["product"]["HR@10"]["mean"] == 1.0


def test_without_refits_the_product_equals_the_no_refit_variant():
    rng = random.Random(5)
    replay = [
        buy(f"{g}{rng.randrange(20)}", f"{g}{rng.randrange(10)}", CUT + t)
        for t, g in enumerate(rng.choice("ab") for _ in range(60))
    ]
    run = simulate(Stream(two_groups(), replay, CUT), SETTINGS, NO_REFIT)
    assert run.outcomes
    assert all(o.lists["product"] == o.lists["no-refit"] for o in run.outcomes)
    assert [fit.reason for fit in run.fits] == ["warm-up"]


def test_growth_refits_when_new_events_reach_growth_times_what_the_model_saw():
    warmup = two_groups()  # 240 events
    replay = [buy(f"a{i % 20}", f"a{i % 10}", CUT + i) for i in range(500)]
    policy = RetrainPolicy(interval=0.0, growth=0.5, new_item_interval=0.0)
    run = simulate(Stream(warmup, replay, CUT), SETTINGS, policy)
    assert [(fit.reason, fit.events) for fit in run.fits] == [
        ("warm-up", 240),
        ("data grew", 360),  # 120 new events = 0.5 x 240
        ("data grew", 540),  # 180 = 0.5 x 360
    ]
    assert run.fits[1].timestamp == CUT + 119


def test_interval_refits_run_on_stream_time_and_only_when_events_arrived():
    replay = [buy("a0", "a1", CUT + t) for t in (10, 50, 250, 260, 1000)]
    policy = RetrainPolicy(interval=100.0, growth=0.0, new_item_interval=0.0)
    run = simulate(Stream(two_groups(), replay, CUT), SETTINGS, policy)
    # Due at +100 (seen at +250, after 2 new events), then at +300 (seen at +1000, 2 more):
    # the one due at +200 found no new event (same data, same model) but restarted the clock.
    assert [(fit.reason, fit.timestamp, fit.events) for fit in run.fits] == [
        ("warm-up", CUT, 240),
        ("schedule", CUT + 100, 242),
        ("schedule", CUT + 300, 244),
    ]


def test_without_new_item_folds_a_new_item_waits_for_a_refit_and_the_users_next_event():
    warmup = two_groups()
    replay = [buy(f"a{u}", "a-new", CUT + u) for u in range(10)]  # growth refit after these
    replay += [buy(f"a{u}", "a-new", CUT + u) for u in range(10, 14)]  # no event since the cut
    for u in range(14, 20):  # an event after the refit, then the probe
        seen = next(e.item_id for e in warmup if e.user_id == f"a{u}")
        replay += [buy(f"a{u}", seen, CUT + 20 + u, "view"), buy(f"a{u}", "a-new", CUT + 21 + u)]
    policy = RetrainPolicy(interval=0.0, growth=10 / 240, new_item_interval=0.0)
    run = simulate(Stream(warmup, replay, CUT), SETTINGS, policy)
    assert (run.fits[1].reason, run.fits[1].events) == ("data grew", 250)
    before, stale, fresh = run.outcomes[:10], run.outcomes[10:14], run.outcomes[14:]
    assert [o.item_known for o in before] == [False] * 10
    assert all("a-new" not in o.lists["product"] for o in before)
    # Known to the new model, but the cached list is from the warm-up model (lazy re-rank).
    assert [o.item_known for o in stale] == [True] * 4
    assert all("a-new" not in o.lists["product"] for o in stale)
    assert all("a-new" in o.lists["product"] for o in fresh)
    assert all("a-new" not in o.lists["frozen"] + o.lists["no-refit"] for o in run.outcomes)


def test_a_new_item_is_folded_in_once_the_new_item_interval_has_passed():
    warmup = two_groups()
    replay = [buy(f"a{u}", "a-new", CUT + u) for u in range(8)]  # folded in before a1's
    for u in range(8, 20):  # an event, then the probe, at +20 and later
        seen = next(e.item_id for e in warmup if e.user_id == f"a{u}")
        replay += [buy(f"a{u}", seen, CUT + 20 + u, "view"), buy(f"a{u}", "a-new", CUT + 21 + u)]
    policy = RetrainPolicy(interval=0.0, growth=0.0, new_item_interval=5.0)
    run = simulate(Stream(warmup, replay, CUT), SETTINGS, policy)
    assert [fit.reason for fit in run.fits] == ["warm-up"]
    assert [o.item_known for o in run.outcomes[:2]] == [False, True]
    # Folded from a0's row alone, it ranks among the a-items for half the later a-users ...
    later = run.outcomes[8:]
    assert sum("a-new" in o.lists["product"] for o in later) >= len(later) / 2
    # ... and never without the fold.
    assert all("a-new" not in o.lists["no-refit"] + o.lists["frozen"] for o in run.outcomes)


def test_frozen_keeps_the_warm_up_vector_while_the_product_follows_the_user():
    warmup = [*two_groups(), buy("mover", "a0", 1), buy("mover", "a1", 2)]
    replay = [buy("mover", f"b{i}", CUT + i) for i in range(8)]
    replay += [buy("newcomer", "b0", CUT + 10), buy("newcomer", "b1", CUT + 11)]
    run = simulate(Stream(warmup, replay, CUT), SETTINGS, NO_REFIT)
    mover = [o for o in run.outcomes if o.user_id == "mover"]
    assert len(mover) == 8
    first = mover[0].lists["frozen"]
    for outcome in mover:  # one fixed ranking, minus the b-items the mover has bought since
        bought = {f"b{i}" for i in range(outcome.position)}
        kept = [item for item in first if item not in bought]
        assert outcome.lists["frozen"][: len(kept)] == kept
        assert not bought & set(outcome.lists["frozen"])
    gains = summarize(mover, ("product", "frozen"))["variants"]
    assert gains["product"]["NDCG@10"]["mean"] > 1.5 * gains["frozen"]["NDCG@10"]["mean"]
    (newcomer,) = [o for o in run.outcomes if o.user_id == "newcomer"]
    assert newcomer.lists["frozen"] == newcomer.lists["popularity"]  # no vector: popular items


SOLD_OUT = "a1"
"""Bought by many a-users in the warm-up, so the a-users' models rank it, but unavailable."""
CATALOGUE = CatalogueSnapshot.of(
    [
        *(
            ItemRecord(f"a{i}", title=f"red wool a{i}", available=f"a{i}" != SOLD_OUT)
            for i in range(10)
        ),
        *(ItemRecord(f"b{i}", title=f"blue cotton b{i}") for i in range(10)),
    ],
    version=1,
)


def served_before(stream: Stream, position: int, model: ranker.FactorModel) -> ServedList:
    """What ``serving.user_lists`` serves the user of the probe at ``position``, computed here
    from scratch: on the user's events and the popularity up to their previous event (or the
    cut), with the catalogue and the model given."""
    user_id = stream.replay[position].user_id
    before = [q for q in range(position) if stream.replay[q].user_id == user_id]
    fed = stream.warmup + stream.replay[: before[-1] + 1 if before else 0]
    rules = ServingRules.of(SETTINGS)
    popularity = Popularity(rules.popularity_half_life)
    row: dict[str, float] = {}
    events = 0
    for event in fed:
        weight = SETTINGS.weight(event.action)
        popularity.add(event.item_id, weight, event.timestamp)
        if event.user_id == user_id:
            row[event.item_id] = row.get(event.item_id, 0.0) + weight
            events += 1
    now = stream.replay[before[-1]].timestamp if before else stream.cut
    popular = popularity.trending(rules.popular_depth, rules.popularity_clock, now)
    (served,) = serving.user_lists(
        model, [UserHistory(events, row)], CATALOGUE, popular, rules, now
    )
    return served


def test_the_simulated_product_list_is_the_serving_policys():
    """Each probe's product list is the first 10 of what ``serving.user_lists`` serves for the
    same events, model, catalogue and popularity: a content list for a user with few events,
    a personal list otherwise, and never an unavailable item."""
    warmup = [*two_groups(), buy("newbie", "b0", 1)]  # one event: a content user
    replay = [buy("newbie", "b1", CUT + 1), buy("newbie", "b2", CUT + 2)]
    for u in range(8):  # two probes each, on a-items new to the user
        seen = {e.item_id for e in warmup if e.user_id == f"a{u}"}
        unseen = sorted({f"a{i}" for i in range(10)} - seen - {SOLD_OUT})
        replay += [buy(f"a{u}", item, CUT + 10 + 2 * u + i) for i, item in enumerate(unseen[:2])]
    stream = Stream(warmup, replay, CUT)
    run = simulate(stream, SETTINGS, NO_REFIT, catalogue=CATALOGUE)
    rows: dict[str, dict[str, float]] = {}
    for event in warmup:  # the warm-up model, refitted here on the same rows in the same order
        row = rows.setdefault(event.user_id, {})
        row[event.item_id] = row.get(event.item_id, 0.0) + SETTINGS.weight(event.action)
    model = ranker.fit(list(rows.values()), als_params(SETTINGS), "warm-up", CUT)

    assert len(run.outcomes) == len(replay)
    sources = {}
    for outcome in run.outcomes:
        served = served_before(stream, outcome.position, model)
        sources.setdefault(outcome.user_id, set()).add(served["source"])
        expected = [item for item, _ in served["items"][:K]]
        assert len(expected) == K
        assert outcome.lists["product"] == outcome.lists["no-refit"] == expected
        assert SOLD_OUT not in outcome.lists["product"]
    assert sources == {"newbie": {"content"}, **{f"a{u}": {"personal"} for u in range(8)}}
    # Without the catalogue the same users get the unavailable item and no content list.
    bare = simulate(stream, SETTINGS, NO_REFIT)
    assert any(SOLD_OUT in outcome.lists["product"] for outcome in bare.outcomes)
    assert [o.lists["product"] for o in bare.outcomes[:2]] != [
        o.lists["product"] for o in run.outcomes[:2]
    ]


# -- scoring ----------------------------------------------------------------------------------


def outcome(position: int, user: str, item: str, day: int, product: list[str]) -> Outcome:
    lists = {"product": product, "frozen": ["zzz"]}
    return Outcome(position, user, item, day * 86_400.0, lists, True)


def test_summary_averages_over_probes_and_pairs_the_differences():
    outcomes = [
        outcome(0, "u1", "x", 0, ["x", "y"]),  # hit at rank 1
        outcome(1, "u1", "w", 0, ["x", "y"]),  # miss
        outcome(2, "u2", "z", 1, ["x", "y", "z"]),  # hit at rank 3
    ]
    report = summarize(outcomes, ("product", "frozen"))
    assert (report["probes"], report["users"], report["cold_item_probes"]) == (3, 2, 0)
    product = report["variants"]["product"]
    assert product["HR@10"]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert product["NDCG@10"]["mean"] == pytest.approx((1 + 1 / math.log2(4)) / 3, abs=1e-4)
    low, high = product["HR@10"]["ci95"]
    assert 0.0 <= low <= 2 / 3 <= high <= 1.0
    assert report["product_minus"]["frozen"]["HR@10"]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    series = daily_series(outcomes, ("product", "frozen"))
    assert series == [
        {"day": "1970-01-01", "probes": 2, "HR@10": {"product": 0.5, "frozen": 0.0}},
        {"day": "1970-01-02", "probes": 1, "HR@10": {"product": 1.0, "frozen": 0.0}},
    ]


def test_agreement_counts_probes_with_the_same_hit_and_the_same_top_10():
    first = [outcome(0, "u", "x", 0, ["x", "y"]), outcome(1, "u", "w", 0, ["x", "y"])]
    second = [outcome(0, "u", "x", 0, ["y", "x"]), outcome(1, "u", "w", 0, ["w", "y"])]
    assert agreement(first, second, "product") == {
        "probes": 2,
        "same_hit": 0.5,
        "same_top10": 0.5,
    }
    with pytest.raises(ValueError, match="same events"):
        agreement(first, second[:1], "product")


def test_reversing_the_fit_order_changes_no_list():
    """The calibration behind the pipeline-agreement test's 95% (tests/integration): the same
    replay, users fitted in reverse order."""
    events = read_events(SAMPLE_EVENTS)
    stream = split_stream(events, 0.8)
    settings = Settings(als_factors=16)
    policy = RetrainPolicy(interval=0.0, growth=settings.retrain_growth, new_item_interval=0.0)
    by_user: dict[str, list[Event]] = {}
    for event in stream.warmup:
        by_user.setdefault(event.user_id, []).append(event)
    reordered = Stream(
        [e for user in reversed(by_user) for e in by_user[user]], stream.replay, stream.cut
    )
    first = simulate(stream, settings, policy, STREAMING_REPLAY_LIMIT)
    second = simulate(reordered, settings, policy, STREAMING_REPLAY_LIMIT)
    assert len(first.outcomes) == 303
    for variant in ("product", "popularity"):
        assert agreement(first.outcomes, second.outcomes, variant)["same_top10"] == 1.0
