"""Offline evaluation: metrics on hand-made rankings, both splits, the models and the adapter."""

import gzip
import math

import numpy as np
import pytest

from app import ranker
from app.datasets import DatasetError, Event, read_events
from app.evaluation import offline
from app.evaluation.offline import (
    bootstrap_ci,
    bootstrap_indices,
    held_out_count,
    temporal_split,
    user_last_split,
)
from app.ranking_metrics import hit_rate_at, ndcg_at, recall_at
from app.settings import Settings

WEIGHT = Settings().weight  # view 0.5, click 1, purchase 2, return -2


def buy(user, item, timestamp, action="purchase"):
    return Event(user, item, action, float(timestamp))


# -- metrics ----------------------------------------------------------------------------------


def test_hit_rate_is_one_when_a_relevant_item_is_within_the_first_k():
    assert hit_rate_at(["a", "b", "c"], {"c"}, 3) == 1.0


def test_hit_rate_ignores_relevant_items_below_the_cut_off():
    assert hit_rate_at(["a", "b", "c"], {"c"}, 2) == 0.0


def test_recall_is_hits_over_the_number_of_relevant_items():
    assert recall_at(["a", "b", "c", "d"], {"b", "d", "x"}, 4) == pytest.approx(2 / 3)


def test_recall_caps_the_denominator_at_k():
    assert recall_at(["a", "b", "z"], {"a", "b", "c", "d", "e"}, 2) == 1.0


def test_ndcg_of_one_relevant_item_at_rank_two_is_one_over_log2_3():
    assert ndcg_at(["x", "a", "y"], {"a"}, 10) == pytest.approx(1 / math.log2(3))


def test_ndcg_divides_by_the_ideal_dcg_of_all_relevant_items_within_k():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # hits at ranks 1 and 3
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # 3 relevant, k = 3
    assert ndcg_at(["a", "x", "b"], {"a", "b", "c"}, 3) == pytest.approx(dcg / ideal)


def test_ndcg_ideal_dcg_counts_at_most_k_relevant_items():
    dcg = 1 / math.log2(3)  # hit at rank 2; the hit at rank 3 is below k
    ideal = 1 / math.log2(2) + 1 / math.log2(3)  # min(k=2, 3 relevant) = 2 ideal hits
    assert ndcg_at(["x", "a", "b"], {"a", "b", "c"}, 2) == pytest.approx(dcg / ideal)


def test_a_perfect_ranking_has_ndcg_one_even_with_more_relevant_items_than_k():
    assert ndcg_at(["a", "b"], {"a", "b", "c"}, 2) == pytest.approx(1.0)


def test_every_metric_is_zero_without_a_hit():
    ranked, relevant = ["x", "y"], {"a"}
    assert (hit_rate_at(ranked, relevant, 2), recall_at(ranked, relevant, 2)) == (0.0, 0.0)
    assert ndcg_at(ranked, relevant, 2) == 0.0


@pytest.mark.parametrize("metric", [hit_rate_at, recall_at, ndcg_at])
def test_a_metric_refuses_an_empty_relevant_set_and_a_cut_off_below_one(metric):
    with pytest.raises(ValueError, match="without relevant items"):
        metric(["a"], set(), 10)
    with pytest.raises(ValueError, match="at least 1"):
        metric(["a"], {"a"}, 0)


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = np.random.default_rng(1).random(200)
    low, high = bootstrap_ci(values, bootstrap_indices(200))
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values, bootstrap_indices(200))


def test_bootstrap_interval_of_identical_values_is_that_value():
    assert bootstrap_ci([0.25] * 50, bootstrap_indices(50)) == (0.25, 0.25)


# -- temporal split ---------------------------------------------------------------------------


def test_temporal_cut_is_the_quantile_of_event_times_and_training_is_before_it():
    events = [buy(f"u{t % 3}", f"i{t}", t) for t in range(1, 11)]
    split = temporal_split(events, 0.2, WEIGHT)
    assert split.cut == pytest.approx(8.2)  # numpy's linear quantile of 1..10 at 0.8
    assert [event.timestamp for event in split.train] == [float(t) for t in range(1, 9)]
    assert split.test_events == 2


def test_temporal_tests_new_positive_items_known_to_training():
    events = [
        buy("u1", "A", 1),
        buy("u1", "B", 2),
        buy("u2", "C", 3),
        buy("u2", "E", 4),
        buy("u2", "A", 5),
        buy("u1", "C", 10),  # new to u1, known: relevant
        buy("u1", "A", 10),  # bought before: not new
        buy("u1", "E", 10),
        buy("u1", "E", 10, "return"),  # purchase and return sum to zero: not positive
        buy("u1", "Z", 10),  # no training event has Z: cannot be ranked
    ]
    split = temporal_split(events, 0.5, WEIGHT)
    assert split.relevant["u1"] == {"C"}


def test_temporal_skips_users_without_training_history_or_relevant_items():
    events = [
        buy("u1", "A", 1),
        buy("u2", "B", 2),
        buy("u1", "B", 10),
        buy("u2", "B", 10),  # u2 only repeats a purchase
        buy("u3", "A", 10),  # u3 has no training history
    ]
    split = temporal_split(events, 0.5, WEIGHT)
    assert split.relevant == {"u1": {"B"}}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_a_test_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        temporal_split([buy("u", "i", 1)], fraction, WEIGHT)


# -- user-last split --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "fraction", "held_out"),
    [(4, 0.1, 0), (5, 0.1, 1), (19, 0.1, 1), (20, 0.1, 2), (10, 0.3, 3), (5, 0.5, 2)],
)
def test_user_last_holds_out_floor_of_the_fraction_but_at_least_one_from_five_events(
    events, fraction, held_out
):
    assert held_out_count(events, fraction) == held_out


def test_user_last_holds_out_each_users_latest_events_by_time_not_file_order():
    times = [7, 3, 10, 1, 9, 2, 8, 4, 6, 5]  # u1's items i0..i9, out of time order
    events = [buy("u1", f"i{n}", t) for n, t in enumerate(times)]
    events += [buy("u2", f"i{n}", n + 1) for n in range(10, 20)]  # makes i10..i19 known
    split = user_last_split(events, 0.2, WEIGHT)
    held_out_items = {"i2", "i4"}  # times 10 and 9
    assert {e.item_id for e in split.train if e.user_id == "u1"} == {f"i{n}" for n in range(10)} - (
        held_out_items
    )
    assert split.test_events == 4  # two of u1 and two of u2


def test_user_last_relevant_items_are_positive_known_and_not_trained_on():
    events = [buy("u1", item, t) for t, item in enumerate(["A", "B", "C", "D"], 1)]
    events += [buy("u2", item, t) for t, item in enumerate(["E", "F", "A"], 1)]
    events += [buy("u1", "E", 20), buy("u1", "A", 21), buy("u1", "F", 22, "return")]
    split = user_last_split(events, 0.5, WEIGHT)  # u1 has 7 events: the last 3 are held out
    assert split.test_events == 3
    assert split.relevant == {"u1": {"E"}}  # A was trained on, F's only event is a return


def test_user_last_keeps_every_event_of_a_user_below_five_events_in_training():
    events = [buy("u1", f"i{n}", n) for n in range(4)]
    split = user_last_split(events, 0.5, WEIGHT)
    assert (split.train, split.relevant, split.test_events) == (events, {}, 0)


# -- models -----------------------------------------------------------------------------------


def test_popularity_sums_positive_weights_ignores_returns_and_breaks_ties_by_id():
    events = [
        buy("u1", "A", 1),
        buy("u2", "A", 2),  # A: 4
        buy("u1", "E", 3),  # E: 2
        buy("u1", "B", 4),
        buy("u1", "B", 5, "return"),  # B: 2, the return does not count
        buy("u1", "C", 6, "view"),
        buy("u2", "C", 7, "view"),
        buy("u3", "C", 8, "view"),  # C: 1.5
        buy("u3", "D", 9, "return"),  # D: 0, still in the catalogue
    ]
    assert offline.popularity_ranking(events, WEIGHT) == ["A", "B", "E", "C", "D"]


def test_popular_unseen_skips_the_users_items():
    assert offline.popular_unseen(["A", "B", "C", "D"], {"A", "C"}, 3) == ["B", "D"]


def tiny_model(rows):
    params = ranker.AlsParams(factors=2, iterations=3, threads=1)
    return ranker.fit(rows, params, "test", 0.0)


def test_als_lists_exclude_items_whose_weights_sum_to_zero():
    rows = [{"A": 2.0, "B": 2.0}, {"C": 2.0, "D": 2.0}, {"A": 2.0, "D": 2.0}]
    model = tiny_model(rows)
    # "B" nets to zero: the ALS matrix drops it, so recommend() alone would return it
    lists, fallbacks = offline.als_lists(model, [{"A": 2.0, "B": 0.0}], 3, lambda row: [])
    assert (sorted(lists[0]), fallbacks) == (["C", "D"], 0)


def test_als_falls_back_for_a_row_without_a_known_item():
    model = tiny_model([{"A": 2.0, "B": 2.0}, {"B": 2.0, "C": 2.0}])
    lists, fallbacks = offline.als_lists(model, [{"Z": 2.0}], 2, lambda row: ["popular"])
    assert (lists, fallbacks) == ([["popular"]], 1)


# -- the whole evaluation ---------------------------------------------------------------------


def two_taste_groups():
    """10 users buy from items a0..a9, 30 from b0..b9: 6 items each, the sixth long after.

    Events 1 to 200 (five per user) come before all of the 40 sixth purchases, so the last
    sixth of the events is exactly the sixth purchases.
    """
    rng = np.random.default_rng(7)
    events = []
    for user in range(40):
        group = "a" if user < 10 else "b"
        items = rng.choice(10, size=6, replace=False)
        for position, item in enumerate(items):
            timestamp = 1000 + 5 * user + position if position < 5 else 5000 + user
            events.append(buy(f"u{user}", f"{group}{item}", timestamp))
    return events


def test_evaluate_reports_each_metric_with_an_interval_around_it_per_model():
    report = offline.evaluate(
        two_taste_groups(), "user-last", 0.1, ["popularity", "als"], Settings()
    )
    assert (report["protocol"], report["test_fraction"], report["users"]) == ("user-last", 0.1, 40)
    for name in ("popularity", "als"):
        summary = report["models"][name]
        for metric in offline.METRICS:
            low, high = summary["ci95"][metric]
            assert low <= summary[metric] <= high


def test_low_rank_als_beats_popularity_when_a_minority_has_its_own_taste():
    two_factors = ranker.AlsParams(factors=2, threads=1)  # 64 factors would memorise 40 users
    report = offline.evaluate(
        two_taste_groups(), "temporal", 1 / 6, ["popularity", "als"], Settings(), two_factors
    )
    popularity, als = report["models"]["popularity"], report["models"]["als"]
    assert report["users"] == 40
    assert popularity["HR@10"] == pytest.approx(0.75)  # the 10 "a" users get only b items
    assert als["HR@10"] > popularity["HR@10"]


def test_an_unknown_protocol_or_model_is_refused():
    with pytest.raises(ValueError, match="unknown protocol"):
        offline.evaluate(two_taste_groups(), "random", 0.1, ["als"], Settings())
    with pytest.raises(ValueError, match="unknown models"):
        offline.evaluate(two_taste_groups(), "temporal", 0.1, ["bpr"], Settings())


# -- the adapter ------------------------------------------------------------------------------

RETAIL = """\
InvoiceNo,StockCode,Description,Quantity,UnitPrice,CustomerID,Country,InvoiceTimestamp,InvoiceDateUTC
536365,85123A,"HANGING HEART, WHITE",6,2.55,17850,United Kingdom,1291191960,2010-12-01 08:26:00
C536379,22556,PLASTERS IN TIN,-12,1.65,14527,United Kingdom,1291196460,2010-12-01 09:41:00
536414,22139,,56,0.0,NA,United Kingdom,1291204320,2010-12-01 11:52:00
536544,21773,ROSE BOTTLE,1,2.51,,United Kingdom,1291213920,2010-12-01 14:32:00
"""


def test_retail_lines_become_purchases_and_cancellations_returns_without_anonymous_lines(
    tmp_path,
):
    path = tmp_path / "retail.csv"
    path.write_text(RETAIL)
    assert read_events(path) == [
        Event("c17850", "85123A", "purchase", 1291191960.0),
        Event("c14527", "22556", "return", 1291196460.0),
    ]


def test_a_gzip_file_is_read_like_the_plain_one_whatever_its_name(tmp_path):
    plain, packed, misnamed = tmp_path / "r.csv", tmp_path / "r.csv.gz", tmp_path / "r2.csv"
    plain.write_text(RETAIL)
    packed.write_bytes(gzip.compress(RETAIL.encode()))
    misnamed.write_bytes(gzip.compress(RETAIL.encode()))
    assert read_events(packed) == read_events(plain) == read_events(misnamed)


def test_an_events_csv_takes_unix_or_iso_times_and_ignores_extra_columns(tmp_path):
    path = tmp_path / "events.csv.gz"
    path.write_bytes(
        gzip.compress(
            b"session,user_id,item_id,action,timestamp\n"
            b"s1,u1,i1,view,1700000000\n"
            b"s1,u1,i2,return,2023-11-14T22:13:20Z\n"
            b"s2,u2,i1,click,2023-11-14T23:13:20+01:00\n"
        )
    )
    assert read_events(path) == [
        Event("u1", "i1", "view", 1_700_000_000.0),
        Event("u1", "i2", "return", 1_700_000_000.0),
        Event("u2", "i1", "click", 1_700_000_000.0),
    ]


def test_an_unknown_header_is_refused_naming_both_formats(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("user,product,when\nu1,i1,1\n")
    with pytest.raises(DatasetError, match=r"user_id,item_id,action,timestamp .*InvoiceNo"):
        read_events(path)


def test_a_bad_timestamp_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,action,timestamp\nu1,i1,view,1\nu1,i2,view,yesterday\n")
    with pytest.raises(DatasetError, match="line 3: timestamp is not ISO-8601"):
        read_events(path)
