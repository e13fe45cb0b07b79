"""Published model encoding: a delta applied to the snapshot equals the trainer's fold."""

import numpy as np
import pytest

from app import ranker
from app.stores.model import (
    apply_delta,
    delta_version,
    encode_delta,
    encode_model,
    published_model,
    version_sequence,
)
from harness.data import random_rows

PARAMS = ranker.AlsParams(factors=8, regularization=0.1, alpha=4.0, iterations=5, threads=1)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, float]]:
    return random_rows(3, items=30, per_user=5, users=80)


@pytest.fixture(scope="module")
def model(rows) -> ranker.FactorModel:
    return ranker.fit(rows, PARAMS, "1-snap", 0.0)


def fold(model: ranker.FactorModel, rows, new_item: str, version: str):
    """What the trainer does: solve the new items, publish them, serve the model plus them."""
    takers = [{**row, new_item: 2.0} for row in rows[:10]]
    item_ids, factors = ranker.solve_new_items(model, takers)
    folded = ranker.with_items(model, item_ids, factors, version, 5.0)
    return folded, encode_delta(version, 5.0, item_ids, factors, {"new_items": len(item_ids)})


def assert_same_model(a: ranker.FactorModel, b: ranker.FactorModel) -> None:
    assert a.version == b.version and a.trained_at == b.trained_at
    assert a.item_ids == b.item_ids and dict(a.item_positions) == dict(b.item_positions)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.user_gram, b.user_gram)


def test_a_delta_applied_to_the_snapshot_equals_the_trainers_folded_model(model, rows):
    folded, delta = fold(model, rows, "fresh", "2-x+1.1")
    applied, meta = apply_delta(model, delta)
    assert_same_model(applied, folded)
    assert meta["metrics"] == {"new_items": 1}


def test_snapshot_and_deltas_decode_to_the_model_after_the_last_fold(model, rows):
    once, first = fold(model, rows, "fresh", "2-x+1.1")
    twice, second = fold(once, rows, "fresher", "3-x+1.2")
    published = published_model(None, "1-snap", encode_model(model, {}), [first, second])
    assert_same_model(published.model, twice)
    assert (published.snapshot, published.deltas, published.version) == ("1-snap", 2, "3-x+1.2")


def test_a_model_behind_catches_up_with_only_the_deltas_it_lacks(model, rows):
    once, first = fold(model, rows, "fresh", "2-x+1.1")
    twice, second = fold(once, rows, "fresher", "3-x+1.2")
    held = published_model(None, "1-snap", encode_model(model, {}), [first])
    caught_up = published_model(held, "1-snap", None, [second])
    assert_same_model(caught_up.model, twice)
    assert caught_up.deltas == 2


def test_a_delta_version_names_its_sequence_snapshot_and_number():
    version = delta_version(12, "7-20260101T000000Z", 3)
    assert version_sequence(version) == 12 and version.endswith("+7.3")
