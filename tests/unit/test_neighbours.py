"""Similar users on a worker: the served snapshot's user factors, read once per snapshot, and a
reason named whenever there is nothing to compare with."""

from __future__ import annotations

import types

import pytest

from app import ranker
from app.neighbours import FittedUsers, NoNeighbours, UserNeighbours
from app.settings import Settings
from app.stores.model import encode_user_factors
from harness.data import random_rows

PARAMS = ranker.AlsParams(factors=4, iterations=5, threads=1)
ROWS = random_rows(3, items=20, per_user=4, users=30)
USERS = [f"u{i}" for i in range(len(ROWS))]


class PublishedFactors:
    """ModelStore's user-factor reads, in memory, counting them."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.loads: list[str] = []

    async def load_user_factors(self, snapshot: str) -> bytes | None:
        self.loads.append(snapshot)
        return self.blobs.get(snapshot)


@pytest.fixture(scope="module")
def fitted() -> tuple[ranker.FactorModel, bytes]:
    item_ids, matrix = ranker.interaction_matrix(ROWS)
    model, factors = ranker.fit_matrix(item_ids, matrix, PARAMS, "1-v", 0.0)
    return model, encode_user_factors(USERS, factors)


def serving(model: ranker.FactorModel | None, snapshot: str = "1-v") -> types.SimpleNamespace:
    """The refresher's served model, as the neighbour search reads it."""
    published = None if model is None else types.SimpleNamespace(snapshot=snapshot)
    return types.SimpleNamespace(published=published, model=model)


async def test_the_served_snapshots_factors_are_read_once_and_again_for_a_new_snapshot(fitted):
    model, blob = fitted
    store = PublishedFactors({"1-v": blob, "2-v": blob})
    refresher = serving(model)
    fitted_users = FittedUsers(Settings(), store)  # type: ignore[arg-type]
    neighbours = UserNeighbours(Settings(), fitted_users, refresher)  # type: ignore[arg-type]

    first, version = await neighbours.similar("u0", ROWS[0], 3)
    again, _ = await neighbours.similar("u0", ROWS[0], 3)
    refresher.published = types.SimpleNamespace(snapshot="2-v")
    await neighbours.similar("u0", ROWS[0], 3)

    assert store.loads == ["1-v", "2-v"]
    assert first == again and len(first) == 3 and "u0" not in dict(first)
    assert version == model.version


@pytest.mark.parametrize(
    ("settings", "has_model", "problem"),
    [
        (Settings(user_neighbours=False), True, r"off \(RECSYS_USER_NEIGHBOURS=false\)"),
        (Settings(), False, "no model has been fitted yet"),
        (Settings(), True, "published without user factors; the next full fit"),
    ],
    ids=["switched off", "no model", "snapshot without factors"],
)
async def test_with_nothing_to_compare_the_search_says_why(fitted, settings, has_model, problem):
    model, _ = fitted
    refresher = serving(model if has_model else None)
    fitted_users = FittedUsers(settings, PublishedFactors({}))  # type: ignore[arg-type]
    neighbours = UserNeighbours(settings, fitted_users, refresher)  # type: ignore[arg-type]

    with pytest.raises(NoNeighbours, match=problem):
        await neighbours.similar("u0", ROWS[0], 3)
