"""The ALS search of ``python -m app tune``: which points it tries, how it spends its budget,
what it recommends, and that its env lines set a worker's parameters."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from app import ranker
from app.datasets import Event
from app.evaluation import offline, tuning
from app.ops.progress import Progress
from app.settings import Settings

CURRENT = ranker.AlsParams(factors=8, regularization=0.05, alpha=1.0, iterations=5, threads=1)
SPACE = tuning.SearchSpace(
    factors=(4, 8), regularization=(0.05,), alpha=(1.0, 5.0), iterations=(5,)
)


def shop_events() -> list[Event]:
    """Two groups of users, each buying along its own set of items over time, so that a later
    period holds items new to a user that others bought earlier."""
    events = []
    for user, step in itertools.product(range(40), range(12)):
        group = user % 2
        item = f"i{group}-{(user * 5 + step) % 30}"
        events.append(Event(f"u{user}", item, "purchase", 1_000.0 + step * 40 + user))
    return events


def task() -> offline.Task:
    return offline.prepare(shop_events(), "temporal", 0.2, Settings().weight)


def test_the_current_settings_are_tried_first_and_every_other_point_once():
    points = list(tuning.candidates(CURRENT, SPACE, seed=3))

    assert points[0] == CURRENT
    assert len(points) == len(set(points)) == SPACE.size
    assert {(p.factors, p.alpha) for p in points} == {(4, 1.0), (4, 5.0), (8, 1.0), (8, 5.0)}


def test_a_current_setting_outside_the_space_is_tried_beside_all_of_it():
    outside = replace(CURRENT, factors=100)

    assert len(list(tuning.candidates(outside, SPACE, seed=3))) == SPACE.size + 1


def search(budget: tuning.Budget, metric: str = "NDCG@10", **clock) -> list[tuning.Trial]:
    """The search over SPACE from CURRENT on the shop's task."""
    points = tuning.candidates(CURRENT, SPACE, 0)
    return tuning.search(task(), points, budget, metric, Progress.silent(), **clock)


def test_the_search_fits_no_more_trials_than_its_budget():
    trials = search(tuning.Budget(3, 60))

    assert len(trials) == 3


def test_no_trial_starts_after_the_time_budget_but_the_first_always_runs():
    ticks = itertools.count(step=10.0)  # each reading of the clock is 10 s later

    trials = search(tuning.Budget(10, 5.0), clock=lambda: next(ticks))

    assert [trial.params for trial in trials] == [CURRENT]


def test_trials_come_best_first_by_the_chosen_metric():
    trials = search(tuning.Budget(10, 60), "HR@10")
    scores = [trial.scores["HR@10"] for trial in trials]

    assert len(trials) == SPACE.size
    assert scores == sorted(scores, reverse=True)


def test_an_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'MAP@5'"):
        tuning.search(task(), iter([CURRENT]), tuning.Budget(1, 1), "MAP@5", Progress.silent())


@pytest.mark.parametrize("trials, seconds", [(0, 10.0), (5, 0.0)])
def test_an_empty_budget_is_refused(trials, seconds):
    with pytest.raises(ValueError, match="a search needs"):
        tuning.Budget(trials, seconds)


def outcome(current_test: float, best_test: float) -> tuning.Outcome:
    best = replace(CURRENT, factors=4)
    return tuning.Outcome(
        trials=[],
        metric="NDCG@10",
        current=CURRENT,
        best=best,
        current_test={"NDCG@10": current_test},
        best_test={"NDCG@10": best_test},
        validation={},
        test={},
    )


def test_the_best_trial_is_recommended_when_it_does_at_least_as_well_on_the_test():
    assert outcome(current_test=0.20, best_test=0.20).recommended.factors == 4


def test_the_current_settings_are_kept_when_the_best_trial_does_worse_on_the_test():
    assert outcome(current_test=0.20, best_test=0.19).recommended == CURRENT


def test_the_env_lines_give_a_worker_the_tuned_parameters(tmp_path):
    tuned = ranker.AlsParams(factors=32, regularization=0.5, alpha=40.0, iterations=30)
    env_file = tmp_path / "tuned.env"
    env_file.write_text("\n".join(tuning.env_lines(tuned)) + "\n")

    settings = Settings.from_env({"RECSYS_ENV_FILE": str(env_file)})

    assert (
        settings.als_factors,
        settings.als_regularization,
        settings.als_alpha,
        settings.als_iterations,
    ) == (32, 0.5, 40.0, 30)


def test_tune_scores_the_current_and_the_best_on_a_test_period_the_search_never_saw():
    events = shop_events()
    result = tuning.tune(events, CURRENT, Settings().weight, SPACE, tuning.Budget(10, 60), seed=1)
    test_cut = offline.temporal_split(events, 0.1, Settings().weight).cut

    assert result.validation["cut"] < test_cut == result.test["cut"]
    assert result.validation["events"] == result.test["train_events"]
    assert result.best == result.trials[0].params
    assert set(result.current_test) >= set(offline.METRICS)
