"""The check a candidate model passes before it goes live (app.model_check), and the trainer
holding out the newest first interactions for it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from app import model_check, ranker
from app.actions import IMPRESSION
from app.model_check import HeldOut, judge
from app.models import UserAction, UserState, empty_state
from app.settings import Settings
from app.trainer import Trainer
from harness.bad_trainer import RandomFactorsTrainer
from harness.fakes import FakeModels

PARAMS = ranker.AlsParams(factors=8, regularization=0.05, alpha=1.0, iterations=10, threads=1)


def taste_rows(users: int = 120, seed: int = 3) -> dict[str, dict[str, float]]:
    """Two groups of users, each buying five of its own ten items."""
    rng = np.random.default_rng(seed)
    rows = {}
    for user in range(users):
        group = user % 2
        items = rng.choice(10, size=5, replace=False)
        rows[f"u{user}"] = {f"g{group}-{item}": 1.0 for item in items}
    return rows


def test_held_out_rows_leave_out_the_held_items_and_users_left_with_nothing():
    rows = {"a": {"x": 1.0, "y": 2.0}, "b": {"x": 1.0}, "c": {"x": 0.0, "y": 1.0}}
    pairs = [("a", "x"), ("b", "x"), ("c", "x"), ("gone", "x")]

    held = model_check.held_out(pairs, rows.get)

    assert held.users == ["a"]  # b has nothing else; c's x no longer weighs; gone is gone
    assert held.rows == [{"y": 2.0}]
    assert held.relevant == [frozenset({"x"})]


def test_without_pairs_removes_exactly_the_held_entries():
    matrix = csr_matrix(np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0]], dtype=np.float32))

    pruned = model_check.without_pairs(
        matrix, ["a", "b"], ("x", "y", "z"), {"a": frozenset({"y"}), "b": frozenset({"x", "q"})}
    )

    assert pruned.toarray().tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 4.0]]
    assert pruned.nnz == 2


@pytest.mark.parametrize(
    ("candidate", "accepted"),
    [(0.19, True), (0.189, False), (0.5, True)],
)
def test_a_candidate_is_refused_only_below_the_serving_score_by_more_than_the_margin(
    candidate, accepted
):
    users = np.ones(60)
    verdict = judge(
        {"HR@10": 0.5 * users, "NDCG@10": candidate * users},
        {"HR@10": 0.5 * users, "NDCG@10": 0.2 * users},
        margin=0.05,
        pairs=90,
    )

    assert verdict.accepted is accepted


def hits(users: int, hit: int, first: int = 0) -> np.ndarray:
    """Per-user HR@10 of ``users`` users: ``hit`` of them from ``first`` on hit."""
    scores = np.zeros(users)
    scores[first : first + hit] = 1.0
    return scores


@pytest.mark.parametrize(
    ("candidate_hits", "serving_hits", "accepted"),
    [(4, 8, True), (40, 80, False), (80, 80, True)],
    ids=["half as many of a few hits: chance", "half as many of many: worse", "as many"],
)
def test_a_shortfall_counts_only_beyond_chance(candidate_hits, serving_hits, accepted):
    candidate, serving = hits(2000, candidate_hits, first=1000), hits(2000, serving_hits)

    verdict = judge(
        {"HR@10": candidate, "NDCG@10": candidate},
        {"HR@10": serving, "NDCG@10": serving},
        margin=0.1,
        pairs=2000,
    )

    assert verdict.accepted is accepted
    assert verdict.candidate["HR@10"] == candidate_hits / 2000


def held_from(rows: dict[str, dict[str, float]]) -> HeldOut:
    """Each user's first item held out."""
    return model_check.held_out(((user, next(iter(row))) for user, row in rows.items()), rows.get)


def test_a_model_with_random_factors_is_refused_against_a_fitted_one():
    rows = taste_rows()
    held = held_from(rows)
    training = [held.rows[held.users.index(user)] for user in rows]
    fitted = ranker.fit(training, PARAMS, "fitted", 0.0)
    noise = np.random.default_rng(1).normal(size=fitted.item_factors.shape)
    random = ranker.model_from_factors(
        "random", 0.0, fitted.item_ids, noise, fitted.user_gram, PARAMS
    )

    verdict = model_check.compare(random, fitted, held, margin=0.05)

    assert verdict.serving["HR@10"] > 0.8
    assert verdict.candidate["HR@10"] < verdict.serving["HR@10"] * 0.95
    assert not verdict.accepted
    assert model_check.compare(fitted, fitted, held, margin=0.0).accepted


def state_bytes(states: dict[str, UserState], user: str, item: str, at: float) -> bytes:
    action = UserAction(user_id=user, item_id=item, action="purchase", timestamp=at)
    states[user] = states.get(user, empty_state()).with_action(action, 2.0, int(at), None)
    return states[user].dumps()


def test_the_trainer_remembers_the_newest_first_interactions_up_to_its_cap():
    trainer = Trainer(Settings(check_pairs=3), FakeModels(), "test")  # type: ignore[arg-type]
    states: dict[str, UserState] = {}
    for at, (user, item) in enumerate(
        [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"), ("c", "q")], start=100
    ):
        trainer.apply(user.encode(), state_bytes(states, user, item, float(at)))

    assert list(trainer.first_pairs) == [("b", "x"), ("b", "z"), ("c", "q")]
    assert ("a", "x") not in trainer.first_pairs  # its second event is not a first one


def test_a_record_without_new_events_does_not_note_its_pairs_again():
    trainer = Trainer(Settings(check_pairs=3), FakeModels(), "test")  # type: ignore[arg-type]
    states: dict[str, UserState] = {}
    trainer.apply(b"a", state_bytes(states, "a", "x", 100.0))
    trainer.apply(b"b", state_bytes(states, "b", "y", 101.0))
    showing = UserAction(user_id="a", item_id="z", action=IMPRESSION, timestamp=102.0)

    trainer.apply(b"a", states["a"].with_impression(showing, 102, None).dumps())
    trainer.apply(b"a", states["a"].with_hidden(["y"], hidden=True, offset=103).dumps())

    assert list(trainer.first_pairs.items()) == [(("a", "x"), 1), (("b", "y"), 2)]


def next_purchases(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """One more item of each user's own group that they have not bought yet."""
    more = {}
    for user, row in rows.items():
        group = int(user[1:]) % 2
        item = next(f"g{group}-{i}" for i in range(10) if f"g{group}-{i}" not in row)
        more[user] = {item: 1.0}
    return more


async def fit_on(
    trainer: Trainer, states: dict[str, UserState], rows: dict[str, dict[str, float]], at: float
) -> None:
    """Apply each user's items as purchase records, one a second, then fit."""
    for user, row in rows.items():
        for item in row:
            trainer.apply(user.encode(), state_bytes(states, user, item, at))
            at += 1
    await trainer.fit_and_publish("test")


CHECKED = Settings(als_factors=8, als_iterations=10, check_min_users=20, check_pairs=500)


async def two_fits(trainer_class: type[Trainer]) -> tuple[Trainer, ranker.FactorModel | None]:
    """A trainer fitted on the taste rows, then on one more purchase of each user; returns it
    and the model it served after the first fit."""
    trainer = trainer_class(CHECKED, FakeModels(), "test")  # type: ignore[arg-type]
    states: dict[str, UserState] = {}
    rows = taste_rows()
    await fit_on(trainer, states, rows, 1_000.0)
    assert trainer.models.published == ["1-test"] and trainer.models.checks == []  # no model yet
    first = trainer.model
    await fit_on(trainer, states, next_purchases(rows), 5_000.0)
    return trainer, first


async def test_the_trainer_checks_a_fit_against_the_serving_model_and_publishes_a_good_one():
    trainer, _ = await two_fits(Trainer)
    models = trainer.models
    rows = taste_rows()

    ((version, verdict),) = models.checks
    assert version == "2-test" and verdict["accepted"]
    assert (verdict["users"], verdict["pairs"]) == (len(rows), len(rows))
    assert models.published == ["1-test", "2-test"]


async def test_the_trainer_keeps_serving_its_model_when_the_candidate_is_refused():
    trainer, serving = await two_fits(RandomFactorsTrainer)
    models = trainer.models

    ((version, verdict),) = models.checks
    assert version == "2-test" and not verdict["accepted"]
    assert models.published == ["1-test"]
    assert trainer.model is serving
    assert trainer.events_at_fit == trainer.events  # no refit at once for the same growth


async def test_a_resumed_model_is_not_checked_on_the_records_read_while_catching_up():
    trainer = Trainer(CHECKED, FakeModels(), "test")  # type: ignore[arg-type]
    states: dict[str, UserState] = {}
    rows = taste_rows()
    await fit_on(trainer, states, rows, 1_000.0)
    for user, row in next_purchases(rows).items():  # read again after a restart, say
        trainer.apply(user.encode(), state_bytes(states, user, next(iter(row)), 5_000.0))
    assert trainer.held_out() is not None

    trainer.caught_up()

    assert trainer.held_out() is None


@pytest.mark.parametrize(
    ("newest", "previous", "rolled_back"),
    [
        ((500, 150), (500, 200), True),  # 0.30 against 0.40: below 0.8 of it
        ((500, 165), (500, 200), False),  # 0.33 against 0.40: within the margin
        ((499, 0), (500, 200), False),  # too few trials of the newest to judge
        ((500, 0), (499, 200), False),  # too few of the previous
    ],
)
def test_a_live_regression_needs_enough_trials_of_both_and_a_drop_beyond_the_margin(
    newest, previous, rolled_back
):
    assert model_check.live_regression(newest, previous, 500, 0.2) is rolled_back
