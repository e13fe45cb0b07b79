"""ranker: exact fold-in, seen-item filtering, popularity arithmetic."""

import math

import numpy as np
import pytest

from app import ranker
from harness.data import random_rows

PARAMS = ranker.AlsParams(factors=8, regularization=0.1, alpha=4.0, iterations=10, threads=1)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, float]]:
    return random_rows(7, items=40, per_user=6, users=120)


@pytest.fixture(scope="module")
def model(rows: list[dict[str, float]]) -> ranker.FactorModel:
    return ranker.fit(rows, PARAMS, "v1", 0.0)


def closed_form_user(model: ranker.FactorModel, row: dict[str, float]) -> np.ndarray:
    """Hu, Koren & Volinsky: x = (YtY + Yt(C - I)Y + reg I)^-1 Yt C p, with C = alpha * r."""
    y = np.asarray(model.als.item_factors, dtype=np.float64)
    a = y.T @ y + PARAMS.regularization * np.eye(PARAMS.factors)
    b = np.zeros(PARAMS.factors)
    for item_id, weight in row.items():
        factor = y[model.item_positions[item_id]]
        confidence = PARAMS.alpha * weight
        a += (confidence - 1.0) * np.outer(factor, factor)
        b += confidence * factor
    return np.linalg.solve(a, b)


def test_fold_in_equals_the_closed_form_least_squares_solution(model, rows):
    folded = ranker.fold_in(model, rows[:5])
    for index, row in enumerate(rows[:5]):
        np.testing.assert_allclose(
            folded[index], closed_form_user(model, row), rtol=2e-3, atol=2e-4
        )


def test_fold_in_of_a_new_user_reacts_to_a_new_interaction(model, rows):
    before = ranker.fold_in(model, [rows[0]])[0]
    grown = {**rows[0], "item39": 2.0} if "item39" not in rows[0] else {**rows[0], "item0": 2.0}
    after = ranker.fold_in(model, [grown])[0]
    np.testing.assert_allclose(after, closed_form_user(model, grown), rtol=2e-3, atol=2e-4)
    assert not np.allclose(before, after)


def test_recommend_scores_are_dot_products_of_folded_user_and_item_factors(model, rows):
    [scored] = ranker.recommend(model, [rows[3]], n=5)
    user = closed_form_user(model, rows[3])
    for item_id, score in scored:
        expected = user @ model.als.item_factors[model.item_positions[item_id]]
        assert score == pytest.approx(expected, rel=1e-2, abs=1e-3)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)


def test_recommend_never_returns_items_the_user_has_seen(model, rows):
    lists = ranker.recommend(model, rows[:20], n=len(model.item_ids))
    for row, scored in zip(rows[:20], lists, strict=True):
        assert scored, "every user here has known items"
        assert not set(row) & {item_id for item_id, _ in scored}
        assert len(scored) == len(model.item_ids) - len(row)


def test_recommend_gives_no_personal_list_when_no_item_is_known(model):
    assert ranker.recommend(model, [{"never-seen": 1.0}, {}], n=5) == [[], []]


def test_recommend_gives_no_personal_list_for_items_folded_in_without_signal(model, rows):
    grown = ranker.fold_in_new_items(model, [{"fresh": 1.0}], "v2", 1.0)  # a new user only
    assert not grown.item_factors[-1].any()
    lists = ranker.recommend(grown, [{"fresh": 1.0}, rows[0]], n=5)
    assert lists[0] == [] and len(lists[1]) == 5


def test_fit_refuses_empty_data():
    with pytest.raises(ValueError, match="without interactions"):
        ranker.fit([{}], PARAMS, "v", 0.0)


def test_log_add_is_log2_of_the_sum():
    assert ranker.log_add(3.0, 5.0) == pytest.approx(math.log2(2**3 + 2**5))
    assert ranker.log_add(1000.0, 1000.0) == pytest.approx(1001.0)


def test_decayed_value_halves_every_half_life():
    score = ranker.decayed_log_score(4.0, timestamp=1_000_000.0, half_life=100.0)
    assert ranker.decayed_value(score, 1_000_000.0, 100.0) == pytest.approx(4.0)
    assert ranker.decayed_value(score, 1_000_200.0, 100.0) == pytest.approx(1.0)


def test_recent_light_interest_outranks_old_heavy_interest():
    old = ranker.decayed_log_score(8.0, timestamp=0.0, half_life=10.0)
    recent = ranker.decayed_log_score(1.0, timestamp=40.0, half_life=10.0)
    assert recent > old


def test_popular_excluding_skips_seen_items_and_keeps_order():
    ranked = [("a", 5.0), ("b", 4.0), ("c", 3.0), ("d", 2.0)]
    assert ranker.popular_excluding(ranked, {"b"}, 2) == [("a", 5.0), ("c", 3.0)]


def test_a_model_rebuilt_from_its_factors_ranks_like_the_original(model, rows):
    rebuilt = ranker.model_from_factors(
        "v2", 1.0, model.item_ids, model.item_factors, model.user_gram, PARAMS
    )
    assert ranker.recommend(rebuilt, rows[:3], n=5) == ranker.recommend(model, rows[:3], n=5)


def test_factors_and_ids_of_different_lengths_are_refused(model):
    with pytest.raises(ValueError, match="item ids for"):
        ranker.model_from_factors(
            "v", 0.0, model.item_ids[:-1], model.item_factors, model.user_gram, PARAMS
        )


def test_a_new_item_is_solved_by_the_item_side_closed_form(model, rows):
    with_new = [{**rows[0], "fresh": 2.0}, {**rows[1], "fresh": 1.0}, rows[2]]
    grown = ranker.fold_in_new_items(model, with_new, "v2", 1.0)
    assert grown.item_ids == (*model.item_ids, "fresh")
    users = ranker.fold_in(model, with_new).astype(np.float64)
    a = model.user_gram + PARAMS.regularization * np.eye(PARAMS.factors)
    b = np.zeros(PARAMS.factors)
    for user, weight in ((users[0], 2.0), (users[1], 1.0)):
        a += (PARAMS.alpha * weight - 1.0) * np.outer(user, user)
        b += PARAMS.alpha * weight * user
    np.testing.assert_allclose(grown.item_factors[-1], np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(grown.item_factors[:-1], model.item_factors)


def test_a_new_item_becomes_a_candidate_for_users_like_those_who_took_it(model, rows):
    takers = [{**row, "fresh": 2.0} for row in rows[:30]]
    grown = ranker.fold_in_new_items(model, takers, "v2", 1.0)
    ranked = [ranker.recommend(grown, [row], n=len(grown.item_ids))[0] for row in rows[:30]]
    assert all(any(item == "fresh" for item, _ in scored) for scored in ranked)
    assert ranker.fold_in_new_items(grown, takers, "v3", 2.0) is grown, "nothing new: unchanged"


def test_similar_items_are_ordered_by_cosine_and_exclude_the_item_itself(model):
    item = model.item_ids[0]
    similar = ranker.similar_items(model, item, n=5)
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    expected = sorted(
        ((other, float(unit[0] @ unit[i])) for i, other in enumerate(model.item_ids) if i),
        key=lambda pair: -pair[1],
    )[:5]
    assert [i for i, _ in similar] == [i for i, _ in expected]
    assert [s for _, s in similar] == pytest.approx([s for _, s in expected], rel=1e-5)


def test_excluded_items_are_never_recommended(model, rows):
    [everything] = ranker.recommend(model, [rows[0]], n=len(model.item_ids))
    banned = {everything[0][0], everything[2][0]}
    [filtered] = ranker.recommend(model, [rows[0]], n=len(model.item_ids), exclude=banned)
    assert [item for item, _ in filtered] == [item for item, _ in everything if item not in banned]


def test_an_item_whose_weights_cancel_out_is_still_seen(model, rows):
    [everything] = ranker.recommend(model, [rows[0]], n=len(model.item_ids))
    returned = everything[0][0]
    row = {**rows[0], returned: 0.0}
    [scored] = ranker.recommend(model, [row], n=5)
    assert returned not in [item for item, _ in scored]
    assert len(scored) == 5


def test_with_items_replaces_known_items_and_appends_unknown_ones_in_order(model):
    known = model.item_ids[3]
    factors = np.arange(3 * PARAMS.factors, dtype=np.float32).reshape(3, PARAMS.factors)
    grown = ranker.with_items(model, ["zz", known, "aa"], factors, "v2", 1.0)
    assert grown.item_ids == (*model.item_ids, "zz", "aa")
    assert grown.item_positions["aa"] == len(model.item_ids) + 1
    np.testing.assert_array_equal(grown.item_factors[grown.item_positions[known]], factors[1])
    np.testing.assert_array_equal(grown.item_factors[-2:], factors[[0, 2]])
    assert model.item_positions.get("zz") is None, "the base model is not changed"


@pytest.fixture(scope="module")
def fitted_users(rows) -> tuple[ranker.FactorModel, list[str], np.ndarray]:
    """A fit's model, its users' ids (row i: ``u{i}``) and their factors."""
    item_ids, matrix = ranker.interaction_matrix(rows)
    model, factors = ranker.fit_matrix(item_ids, matrix, PARAMS, "v1", 0.0)
    return model, [f"u{i}" for i in range(len(rows))], factors


@pytest.mark.parametrize("min_users", [10**9, 1], ids=["exact", "hnsw"])
def test_similar_users_are_ordered_by_cosine_to_the_solved_vector_and_exclude_the_user(
    fitted_users, rows, min_users
):
    model, user_ids, factors = fitted_users
    users = ranker.user_factors("v1", user_ids, factors, min_users)

    similar = ranker.similar_users(model, users, "u3", rows[3], n=5)

    query = closed_form_user(model, rows[3])
    cosine = factors @ query / (np.linalg.norm(factors, axis=1) * np.linalg.norm(query))
    expected = sorted(
        ((user_ids[i], float(cosine[i])) for i in range(len(user_ids)) if i != 3),
        key=lambda pair: -pair[1],
    )[:5]
    assert [u for u, _ in similar] == [u for u, _ in expected]
    assert [s for _, s in similar] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_a_user_the_model_knows_nothing_of_has_no_similar_users(fitted_users):
    model, user_ids, factors = fitted_users
    users = ranker.user_factors("v1", user_ids, factors, 10**9)

    assert ranker.similar_users(model, users, "newcomer", {"unknown-item": 1.0}, n=5) == []
