"""Experiments: the arm assignment, the ids that name an arm, the intervals of the report, and
an arm without fold-in served by the vectors of the last full fit."""

from __future__ import annotations

import math
import types
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from app import experiments, ranker, serving
from app.experiments import Arm, parse_arms
from app.models import UserAction
from app.ops.metrics import ArmTally
from app.refresher import ListRefresher
from app.serving import CatalogueSnapshot
from app.settings import Settings, SettingsError
from tests.unit.test_serving_paths import POPULAR, ROWS, WHEN, HeldStates, state_of

TWO_ARMS = "fold-in:3,batch:1:fold_in=off"


def test_shares_are_normalised_and_options_read():
    experiment = parse_arms(TWO_ARMS, "e1")

    assert experiment.arms == (Arm("fold-in", 0.75, True), Arm("batch", 0.25, False))
    assert experiment.batch_arms


def test_without_arms_everybody_is_in_one_default_arm():
    experiment = parse_arms("", "e1")

    assert experiment.arms == (experiments.DEFAULT_ARM,)
    assert experiment.arm_of("anybody") == experiments.DEFAULT_ARM
    assert not experiment.batch_arms


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a:x", "share 'x' is not a number"),
        ("a:0", "share must be positive"),
        ("a", "expected name:share"),
        ("a.b:1", "a name without '.'"),
        ("a:1,a:2", "arm names must differ"),
        ("a:1:fold_in=maybe", "unknown option 'fold_in=maybe'"),
    ],
)
def test_a_malformed_arm_is_refused_naming_the_problem(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_arms(text, "e1")


def test_the_settings_refuse_bad_arms_naming_the_variable():
    with pytest.raises(SettingsError, match="RECSYS_EXPERIMENT_ARMS: arm 'a': share"):
        Settings(experiment_arms="a:x").validate()


def test_an_arm_without_fold_in_needs_the_published_user_factors():
    with pytest.raises(SettingsError, match="RECSYS_USER_NEIGHBOURS=false"):
        Settings(experiment_arms=TWO_ARMS, user_neighbours=False).validate()


def test_users_are_dealt_into_arms_in_their_shares_and_always_the_same_arm():
    experiment = parse_arms(TWO_ARMS, "e1")
    users = [f"u{n}" for n in range(20_000)]

    dealt = Counter(experiment.arm_of(user).name for user in users)

    assert dealt["fold-in"] / len(users) == pytest.approx(0.75, abs=0.015)
    assert all(experiment.arm_of(user) == parse_arms(TWO_ARMS, "e1").arm_of(user) for user in users)


def test_a_new_experiment_name_deals_the_users_afresh():
    first, second = parse_arms("a:1,b:1", "e1"), parse_arms("a:1,b:1", "e2")
    users = [f"u{n}" for n in range(2_000)]

    moved = sum(first.arm_of(user) != second.arm_of(user) for user in users)

    assert moved / len(users) == pytest.approx(0.5, abs=0.05)


def test_a_recommendation_id_names_its_arm_and_is_new_each_time():
    experiment = parse_arms(TWO_ARMS, "e1")
    batch = experiment.arm_named("batch")

    first, second = experiments.recommendation_id(batch), experiments.recommendation_id(batch)

    assert first != second and first.startswith("batch.")
    assert experiment.answered_arm(first) == batch
    assert experiment.answered_arm("elsewhere.0123") is None
    assert experiment.answered_arm("no-separator") is None


@pytest.mark.parametrize(("hits", "trials"), [(0, 10), (3, 10), (30, 100), (100, 100)])
def test_the_hit_rate_interval_is_wilsons(hits, trials):
    expected = stats.binomtest(hits, trials).proportion_ci(0.95, "wilson")

    low, high = experiments.proportion_interval(hits, trials)

    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)


@pytest.mark.parametrize(("events", "exposure"), [(0, 10), (7, 10), (250, 100)])
def test_the_click_through_interval_is_the_exact_poisson_one(events, exposure):
    low, high = experiments.rate_interval(events, exposure)

    expected_low = stats.chi2.ppf(0.025, 2 * events) / 2 if events else 0.0
    expected_high = stats.chi2.ppf(0.975, 2 * events + 2) / 2
    assert (low, high) == pytest.approx((expected_low / exposure, expected_high / exposure))


def test_the_difference_interval_is_centred_on_the_difference():
    value, low, high = experiments.difference_interval(40, 100, 20, 100)

    spread = 1.959964 * math.sqrt(0.4 * 0.6 / 100 + 0.2 * 0.8 / 100)
    assert (value, low, high) == pytest.approx((0.2, 0.2 - spread, 0.2 + spread), rel=1e-5)


def test_nothing_counted_has_no_interval():
    assert experiments.proportion_interval(0, 0) is None
    assert experiments.rate_interval(0, 0) is None
    assert experiments.difference_interval(1, 2, 0, 0) is None


def test_the_report_gives_each_arm_its_rates_and_the_difference_to_the_control():
    experiment = parse_arms(TWO_ARMS, "e1")
    counts = {
        "fold-in": {"served": 50, "answered": 10, "trials": 200, "hits": 40},
        "batch": {"trials": 100, "hits": 10},
    }

    control, batch = experiments.report(experiment, counts)["arms"]

    assert control["hit_rate_at_10"]["value"] == 0.2 and "hit_rate_vs_control" not in control
    assert control["click_through"]["value"] == 0.2
    assert batch["served"] == 0 and batch["click_through"] is None
    assert batch["hit_rate_vs_control"]["value"] == pytest.approx(-0.1)
    assert batch["hit_rate_vs_control"]["high"] < 0  # 0.1 against 0.2 over these trials


def test_the_tally_keeps_counts_taken_but_not_stored_for_the_next_flush():
    tally = ArmTally()
    tally.count("a", "trials")
    tally.count("a", "hits")

    taken = tally.take()
    tally.count("a", "trials")
    tally.put_back(taken)

    assert taken == {"a": {"trials": 1, "hits": 1}}
    assert tally.take() == {"a": {"trials": 2, "hits": 1}}
    assert tally.take() == {}


def test_given_vectors_users_are_ranked_by_them_and_a_zero_vector_gets_no_list():
    params = ranker.AlsParams(factors=4, regularization=0.1, alpha=2.0, iterations=5, threads=1)
    model = ranker.fit(ROWS, params, "v1", WHEN)
    toward = model.item_factors[model.item_positions["g"]]
    vectors = np.stack([toward, np.zeros_like(toward)])

    ranked, empty = ranker.recommend(model, [{"a": 1.0}, {"a": 1.0}], 3, vectors=vectors)

    scores = model.item_factors @ toward
    scores[model.item_positions["a"]] = -np.inf
    best = [model.item_ids[i] for i in np.argsort(-scores)[:3]]
    assert [item for item, _ in ranked] == best and empty == []


def users_in(experiment: experiments.Experiment, arm: str, count: int) -> list[str]:
    found = (f"user{n}" for n in range(10_000))
    return [user for user in found if experiment.arm_of(user).name == arm][:count]


@pytest.fixture
def two_arm_refresher():
    settings = Settings(experiment_arms=TWO_ARMS, cache_size=5)
    folded, fitted, unfitted = (
        *users_in(settings.experiment, "fold-in", 1),
        *users_in(settings.experiment, "batch", 2),
    )
    states = {user: state_of("a", "b", "d", "b", "d") for user in (folded, fitted, unfitted)}
    refresher = ListRefresher(settings, types.SimpleNamespace(), HeldStates(states))
    params = ranker.AlsParams(factors=4, regularization=0.1, alpha=2.0, iterations=5, threads=1)
    refresher.model = ranker.fit(ROWS, params, "v1", WHEN)
    refresher.catalogue = CatalogueSnapshot()
    toward = refresher.model.item_factors[refresher.model.item_positions["g"]][None, :]
    refresher.fitted = ranker.user_factors("v1", [fitted], toward, min_users=1_000)
    yield refresher, states, (folded, fitted, unfitted)
    refresher.close()


def test_an_arm_without_fold_in_ranks_by_the_users_vector_of_the_last_fit(two_arm_refresher):
    refresher, states, (folded, fitted, unfitted) = two_arm_refresher
    model = refresher.model

    ranked = refresher.lists({user: refresher.history(states[user]) for user in states}, POPULAR)
    lists = dict(zip(states, ranked, strict=True))

    (expected_folded,) = serving.user_lists(
        model, [refresher.history(states[folded])], refresher.catalogue, POPULAR, refresher.rules
    )
    scores = model.item_factors @ model.item_factors[model.item_positions["g"]]
    order = [model.item_ids[i] for i in np.argsort(-scores) if model.item_ids[i] not in "abd"]
    assert [item for item, _ in lists[folded]["items"]] == [
        item for item, _ in expected_folded["items"]
    ]
    assert [item for item, _ in lists[fitted]["items"]] == order[:5]
    assert lists[fitted]["source"] == "personal"
    assert lists[unfitted]["source"] == "popular"  # in the batch arm, unknown to the last fit


def test_a_first_event_on_an_item_is_a_trial_of_its_users_arm_and_answers_the_list_it_names(
    two_arm_refresher,
):
    refresher, _, (folded, fitted, _) = two_arm_refresher
    refresher.live.written(fitted, ["x"], "v1")
    answering = experiments.recommendation_id(refresher.experiment.arm_named("batch"))

    clicked = UserAction(fitted, "x", "click", WHEN, recommendation_id=answering)
    refresher.record(clicked, 1.0, state_of("x"), None)
    refresher.record(UserAction(folded, "y", "view", WHEN), 0.5, state_of("y"), None)

    assert refresher.arms.take() == {"batch": {"trials": 1, "hits": 1, "answered": 1}}


def test_a_repeat_event_on_an_item_is_no_live_trial(two_arm_refresher):
    refresher, _, (_, fitted, _) = two_arm_refresher
    refresher.live.written(fitted, ["x"], "v1")

    refresher.record(UserAction(fitted, "x", "click", WHEN), 1.0, state_of("x", "x"), None)

    assert refresher.arms.take() == {}
    assert refresher.live.take_by_model() == {}
