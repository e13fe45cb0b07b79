"""candidates: approximate top-k by inner product, exclusions, appended items; the ranker's
choice between it and exact search."""

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from implicit.cpu.topk import topk
from redis.asyncio import Redis

from app import candidates, ranker
from app.refresher import ListRefresher
from app.settings import Settings
from app.stores import Stores
from app.stores.model import decode_model, encode_model
from harness.data import random_rows

PARAMS = ranker.AlsParams(factors=8, regularization=0.1, alpha=4.0, iterations=10, threads=1)


def clustered(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), count)] + 0.5 * rng.standard_normal(
        (count, centres.shape[1])
    )
    return vectors.astype(np.float32)


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    """5,000 items and 200 users around 50 shared centres, item norms log-normal."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((50, 16))
    items = clustered(rng, 5000, centres) * rng.lognormal(0, 0.5, (5000, 1)).astype(np.float32)
    return np.ascontiguousarray(items), clustered(rng, 200, centres)


def no_exclusions(users: np.ndarray) -> list[np.ndarray]:
    return [np.array([], dtype=np.int64)] * len(users)


def test_recall_at_10_against_exact_inner_product_is_high(catalogue):
    items, users = catalogue
    index = candidates.CandidateIndex.build(items)
    found, _ = candidates.top_k(index, items, users, 10, no_exclusions(users))
    exact, _ = topk(items, users, 10, num_threads=1)
    hits = sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist(), strict=True))
    assert hits / exact.size >= 0.95


def test_scores_are_exact_dot_products_best_first(catalogue):
    items, users = catalogue
    index = candidates.CandidateIndex.build(items)
    ids, scores = candidates.top_k(index, items, users[:5], 10, no_exclusions(users[:5]))
    np.testing.assert_allclose(scores, np.einsum("ukf,uf->uk", items[ids], users[:5]), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_excluded_items_are_never_returned(catalogue):
    items, users = catalogue
    index = candidates.CandidateIndex.build(items)
    best, _ = candidates.top_k(index, items, users[:20], 10, no_exclusions(users[:20]))
    ids, _ = candidates.top_k(index, items, users[:20], 10, list(best))
    assert not any(set(row) & set(banned) for row, banned in zip(ids, best, strict=True))
    assert (ids >= 0).all()


def test_a_user_left_with_too_few_candidates_is_ranked_exactly(catalogue):
    items, users = catalogue
    index = candidates.CandidateIndex.build(items)
    allowed = np.array([7, 70, 700])
    banned = np.setdiff1d(np.arange(len(items)), allowed)
    ids, scores = candidates.top_k(index, items, users[:1], 5, [banned])
    assert sorted(ids[0, :3]) == sorted(allowed) and (ids[0, 3:] == -1).all()
    assert (scores[0, 3:] == candidates.MISSING_SCORE).all()


def test_exact_top_k_is_the_best_k_by_full_sort(catalogue):
    items, users = catalogue
    excluded = [np.arange(user, 5000, 7) for user in range(30)]
    ids, scores = candidates.exact_top_k(items, users[:30], 10, excluded)
    for user, banned in enumerate(excluded):
        allowed = np.setdiff1d(np.arange(len(items)), banned)
        full = items[allowed] @ users[user]
        assert ids[user].tolist() == allowed[np.argsort(-full, kind="stable")[:10]].tolist()
        np.testing.assert_allclose(scores[user], np.sort(full)[::-1][:10], rtol=1e-5)


def test_exact_top_k_breaks_ties_by_lower_position_and_pads():
    items = np.array([[1.0], [2.0], [2.0], [0.5], [2.0]], dtype=np.float32)
    ids, scores = candidates.exact_top_k(items, np.ones((1, 1), np.float32), 5, [np.array([4, 3])])
    assert ids[0].tolist() == [1, 2, 0, -1, -1]
    assert scores[0].tolist() == [2.0, 2.0, 1.0, candidates.MISSING_SCORE, candidates.MISSING_SCORE]


def test_exact_top_k_keeps_the_lowest_positions_among_ties_at_the_cut():
    items = np.ones((1000, 1), dtype=np.float32)
    items[500] = 3.0
    ids, _ = candidates.exact_top_k(items, np.ones((1, 1), np.float32), 3, [np.array([0])])
    assert ids[0].tolist() == [500, 1, 2]


def test_exact_top_k_of_a_large_catalogue_breaks_ties_at_the_cut_by_lower_position():
    items = np.zeros((candidates.BLOCKED_MIN_ITEMS, 2), dtype=np.float32)
    items[[9, 40], 0] = 2.0  # two clear winners; every other item scores 0
    ids, scores = candidates.exact_top_k(items, np.ones((1, 2), np.float32), 4, [np.array([0])])
    assert ids[0].tolist() == [9, 40, 1, 2]
    assert scores[0].tolist() == [2.0, 2.0, 0.0, 0.0]


def test_exact_top_k_of_a_large_catalogue_pads_when_too_few_items_are_allowed():
    items = np.arange(candidates.BLOCKED_MIN_ITEMS, dtype=np.float32)[:, None]
    banned = np.arange(candidates.BLOCKED_MIN_ITEMS - 2)
    ids, scores = candidates.exact_top_k(items, np.ones((1, 1), np.float32), 4, [banned])
    last = candidates.BLOCKED_MIN_ITEMS - 1
    assert ids[0].tolist() == [last, last - 1, -1, -1]
    assert scores[0, 2:].tolist() == [candidates.MISSING_SCORE] * 2


def test_an_appended_item_is_found(catalogue):
    items, users = catalogue
    index = candidates.CandidateIndex.build(items[:4000])
    new = (100 * users[0] / np.linalg.norm(users[0]))[None, :].astype(np.float32)
    index.add(new, start=4000)
    extended = np.vstack([items[:4000], new])
    ids, _ = candidates.top_k(index, extended, users[:1], 10, no_exclusions(users[:1]))
    assert ids[0, 0] == 4000


def test_a_search_ignores_positions_past_the_callers_items(catalogue):
    items, users = catalogue
    index = candidates.CandidateIndex.build(items[:4000])
    index.add(items[4000:], start=4000)
    ids, _ = candidates.top_k(index, items[:4000], users, 10, no_exclusions(users))
    assert ids.max() < 4000 and (ids >= 0).all()


def test_items_append_only_at_the_end(catalogue):
    items, _ = catalogue
    index = candidates.CandidateIndex.build(items[:100])
    with pytest.raises(ValueError):
        index.add(items[100:110], start=50)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, float]]:
    return random_rows(7, items=40, per_user=6, users=120)


@pytest.fixture(scope="module")
def model(rows) -> ranker.FactorModel:
    return ranker.fit(rows, PARAMS, "v1", 0.0)


def test_below_the_threshold_the_model_keeps_exact_search(model):
    assert ranker.with_candidate_index(model, len(model.item_ids) + 1).candidates is None


def test_from_the_threshold_the_model_gets_an_index(model):
    indexed = ranker.with_candidate_index(model, len(model.item_ids))
    assert len(indexed.candidates) == len(model.item_ids)


def test_a_small_catalogue_ranks_the_same_with_the_index_as_exactly(model, rows):
    indexed = ranker.with_candidate_index(model, 1)
    exclude = ["item3", "item11"]
    exact = ranker.recommend(model, rows[:30], 10, exclude)
    approximate = ranker.recommend(indexed, rows[:30], 10, exclude)
    assert [[i for i, _ in r] for r in approximate] == [[i for i, _ in r] for r in exact]
    np.testing.assert_allclose(
        [s for r in approximate for _, s in r], [s for r in exact for _, s in r], rtol=1e-5
    )


def test_folded_in_new_items_join_the_same_index(model, rows):
    indexed = ranker.with_candidate_index(model, 1)
    taken = [{**row, "brand-new": 2.0} for row in rows[:10]]
    extended = ranker.fold_in_new_items(indexed, taken, "v2", 1.0)
    assert extended.candidates is indexed.candidates
    assert len(extended.candidates) == len(extended.item_ids) == len(model.item_ids) + 1
    ranked = ranker.recommend(extended, [rows[0]], len(extended.item_ids))
    assert "brand-new" in [item for item, _ in ranked[0]]


def test_a_decoded_model_that_appends_items_extends_the_previous_index(model, rows):
    previous = ranker.with_candidate_index(model, 1)
    published = ranker.fold_in_new_items(model, [{**rows[0], "brand-new": 2.0}], "v2", 1.0)
    served = ranker.with_candidate_index(published, 1, previous)
    assert served.candidates is previous.candidates
    assert len(served.candidates) == len(published.item_ids)


def test_a_refitted_model_gets_a_new_index(model, rows):
    previous = ranker.with_candidate_index(model, 1)
    refitted = ranker.fit(rows[::-1], PARAMS, "v2", 1.0)
    served = ranker.with_candidate_index(refitted, 1, previous)
    assert served.candidates is not previous.candidates


@pytest.fixture
def refresher_for() -> Iterator[Callable[[int], ListRefresher]]:
    made: list[ListRefresher] = []

    def make(ann_min_items: int) -> ListRefresher:
        settings = Settings(redis_url="redis://127.0.0.1:1/0", ann_min_items=ann_min_items)
        stores = Stores.of(Redis.from_url(settings.redis_url), settings)  # never used
        made.append(ListRefresher(settings, stores, states=None))
        return made[-1]

    yield make
    for refresher in made:
        refresher.close()


def test_the_refresher_indexes_a_published_model_from_the_threshold(model, refresher_for):
    published, _ = decode_model(encode_model(model, {}))
    assert refresher_for(len(model.item_ids)).indexed(published).candidates is not None
    assert refresher_for(len(model.item_ids) + 1).indexed(published).candidates is None


def test_the_refresher_extends_its_index_for_a_model_with_appended_items(
    model, rows, refresher_for
):
    refresher = refresher_for(1)
    refresher.model = refresher.indexed(decode_model(encode_model(model, {}))[0])
    published = ranker.fold_in_new_items(model, [{**rows[0], "brand-new": 2.0}], "v2", 1.0)
    served = refresher.indexed(decode_model(encode_model(published, {}))[0])
    assert served.candidates is refresher.model.candidates
    assert len(served.candidates) == len(published.item_ids)
