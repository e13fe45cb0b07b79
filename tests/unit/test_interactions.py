"""The trainer's array-backed rows (app.interactions) against a dict-of-dicts reference, and
the trainer fitting in the background while records keep arriving. No services."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app import interactions as interactions_module
from app import ranker
from app.interactions import Interactions
from app.models import UserAction, UserState, empty_state
from app.settings import Settings
from app.stores.model import decode_user_factors
from app.trainer import Trainer
from harness.fakes import FakeModels

WEIGHTS = (1.0, 0.5, 2.0, 3.0, -1.0, 0.0)  # float32-exact, zero and negative included


def random_row(rng: np.random.Generator, items: int, size: int) -> dict[str, float]:
    chosen = rng.choice(items, size=min(size, items), replace=False)
    return {f"i{j}": float(rng.choice(WEIGHTS)) for j in chosen}


def churn(
    store: Interactions, rng: np.random.Generator, operations: int, users: int, items: int
) -> dict[str, tuple[dict[str, float], int]]:
    """Random puts (rows growing, shrinking, emptied) and removals; the expected end state."""
    expected: dict[str, tuple[dict[str, float], int]] = {}
    for _ in range(operations):
        user = f"u{rng.integers(users)}"
        if rng.random() < 0.1:
            store.remove(user)
            expected.pop(user, None)
            continue
        row = random_row(rng, items, int(rng.integers(0, 30)))
        count = int(rng.integers(0, 100))
        store.put(user, list(row), list(row.values()), count)
        expected.pop(user, None)  # a re-created user goes last, as in a dict
        expected[user] = (row, count)
    return expected


def assert_holds(store: Interactions, expected: dict[str, tuple[dict[str, float], int]]) -> None:
    assert store.users == len(expected)
    assert set(store.user_ids()) == set(expected)
    assert store.pairs == sum(len(row) for row, _ in expected.values())
    assert store.events == sum(count for _, count in expected.values())
    for user, (row, count) in expected.items():
        assert store.row(user) == row
        assert list(store.row(user)) == list(row)  # the record's item order is kept
        assert store.event_count(user) == count
        assert user in store


def test_replacing_removing_and_compacting_keep_exactly_the_latest_rows():
    store = Interactions(min_capacity=64)
    rng = np.random.default_rng(1)
    expected = churn(store, rng, operations=4000, users=150, items=80)
    assert store.compactions > 10, "the churn must have compacted many times"
    assert_holds(store, expected)
    gone = next(u for u in (f"u{i}" for i in range(150)) if u not in expected)
    assert gone not in store
    with pytest.raises(KeyError):
        store.row(gone)
    store.remove(gone)  # removing a user not held is harmless
    assert_holds(store, expected)


def test_an_emptied_row_and_a_recreated_user_are_held_like_a_dict():
    store = Interactions(min_capacity=4)
    store.put("a", ["x", "y"], [1.0, 2.0], 2)
    store.put("a", [], [], 3)
    store.remove("b")
    assert store.row("a") == {} and store.users == 1 and store.events == 3
    store.remove("a")
    store.put("a", ["z"], [1.0], 1)
    assert store.row("a") == {"z": 1.0} and store.pairs == 1 and store.events == 1


def reference_csr(store: Interactions, expected) -> tuple[tuple[str, ...], object]:
    rows = [expected[user][0] for user in store.user_ids()]
    return ranker.interaction_matrix(rows)


@pytest.mark.parametrize("chunk", [7, interactions_module.CHUNK_PAIRS])
def test_to_csr_equals_the_rankers_interaction_matrix_on_the_same_rows(monkeypatch, chunk):
    monkeypatch.setattr(interactions_module, "CHUNK_PAIRS", chunk)
    store = Interactions(min_capacity=64)
    rng = np.random.default_rng(2)
    expected = churn(store, rng, operations=3000, users=120, items=60)
    store.put("zeros-only", ["only-zero"], [0.0], 1)  # an item seen with zero weight only
    expected["zeros-only"] = ({"only-zero": 0.0}, 1)
    store.put("gone", ["only-in-a-removed-row"], [1.0], 1)
    store.remove("gone")

    item_ids, matrix = store.to_csr()
    reference_ids, reference = reference_csr(store, expected)
    assert item_ids == reference_ids
    assert "only-zero" in item_ids and "only-in-a-removed-row" not in item_ids
    assert matrix.shape == reference.shape
    np.testing.assert_array_equal(matrix.indptr, reference.indptr)
    np.testing.assert_array_equal(matrix.indices, reference.indices)
    np.testing.assert_array_equal(matrix.data, reference.data)
    assert not (matrix.data == 0).any()


def test_a_snapshot_is_unchanged_by_later_records_and_compactions():
    store = Interactions(min_capacity=16)
    rng = np.random.default_rng(3)
    expected = churn(store, rng, operations=300, users=40, items=30)
    snapshot = store.snapshot()
    before_ids, before = reference_csr(store, expected)
    compactions = store.compactions
    churn(store, rng, operations=2000, users=60, items=50)
    assert store.compactions > compactions
    item_ids, matrix = snapshot.to_csr()
    assert item_ids == before_ids
    assert (matrix != before).nnz == 0
    assert snapshot.events == sum(count for _, count in expected.values())


def test_users_with_finds_every_holder_of_the_flagged_items(monkeypatch):
    monkeypatch.setattr(interactions_module, "CHUNK_PAIRS", 5)
    store = Interactions(min_capacity=16)
    rng = np.random.default_rng(4)
    expected = churn(store, rng, operations=1000, users=50, items=40)
    wanted = {"i3", "i17", "i39"}
    flags = np.array([store.item_id(p) in wanted for p in range(store.item_count)])
    found = store.snapshot().users_with(flags)
    reference = {
        item: sorted(u for u, (row, _) in expected.items() if item in row) for item in wanted
    }
    assert {item: sorted(users) for item, users in found.items()} == {
        item: users for item, users in reference.items() if users
    }


def test_bytes_per_live_pair_stay_under_16_after_heavy_rewriting():
    store = Interactions()
    rng = np.random.default_rng(5)
    sizes = rng.integers(5, 60, size=20_000)
    for rewrite in range(1, 5):  # every user's state grows and is rewritten, as the changelog
        for user, size in enumerate(sizes.tolist()):
            length = size * rewrite // 4
            items = [f"i{j}" for j in range(length)]
            store.put(f"u{user}", items, [1.0] * length, length)
    for user in range(0, 20_000, 3):  # and a third of the users go
        store.remove(f"u{user}")
    memory = store.nbytes()
    per_pair = memory["pair_buffers"] / store.pairs
    assert per_pair < 16, memory
    assert store.compactions > 0
    # Per-user and per-item overhead is separate and bounded per user, not per pair.
    assert memory["user_arrays"] <= interactions_module.USER_GROWTH * 20 * 20_000


def test_while_rows_only_grow_the_buffers_hold_at_most_growth_times_the_live_pairs():
    store = Interactions(min_capacity=64)
    rng = np.random.default_rng(8)
    sizes = rng.integers(1, 40, size=2_000)
    for rewrite in range(1, 5):
        for user, size in enumerate(sizes.tolist()):
            length = max(1, size * rewrite // 4)
            store.put(f"u{user}", [f"i{j}" for j in range(length)], [1.0] * length, 1)
            if user % 100 == 0:
                capacity = store.nbytes()["pair_buffers"] / 8
                assert capacity <= max(64, interactions_module.GROWTH * store.pairs)
    assert store.compactions > 10


def test_a_put_that_shrinks_the_buffers_returns_the_positions_of_its_own_row():
    store = Interactions(min_capacity=4)
    store.put("big", [f"i{j}" for j in range(100)], [1.0] * 100, 1)
    store.put("other", ["i5", "i7"], [1.0, 2.0], 1)
    compactions = store.compactions
    positions = store.put("big", ["i3"], [1.0], 1)  # 3 live pairs in ~100: shrinks
    assert store.compactions > compactions
    assert [store.item_id(p) for p in positions.tolist()] == ["i3"]
    assert store.row("big") == {"i3": 1.0} and store.row("other") == {"i5": 1.0, "i7": 2.0}


def test_event_counts_and_rows_read_back_as_python_values():
    store = Interactions()
    store.put("u", ["a"], [1.5], 2**40)  # counts are 64-bit
    assert store.event_count("u") == 2**40 and type(store.event_count("u")) is int
    assert store.events == 2**40 and type(store.events) is int
    store.remove("u")
    assert store.event_count("u") == 0 and store.events == 0 and "u" not in store


def table_value(state: UserState) -> bytes:
    """A user-state changelog value as the worker's table writes it (the Record's JSON)."""
    return state.dumps()


def test_the_trainer_applying_changelog_records_holds_what_a_dict_reference_holds():
    rng = np.random.default_rng(6)
    trainer = Trainer(Settings(), models=None, owner="test")  # type: ignore[arg-type]
    states: dict[str, UserState] = {}
    reference_rows: dict[str, dict[str, float]] = {}
    reference_counts: dict[str, int] = {}
    actions = ("view", "cart", "purchase", "return")
    for offset in range(6000):
        user = f"u{rng.integers(200)}"
        if rng.random() < 0.02:
            trainer.apply(user.encode(), None)
            states.pop(user, None)
            reference_rows.pop(user, None)
            reference_counts.pop(user, None)
            continue
        action = UserAction(
            user_id=user,
            item_id=f"i{int(rng.zipf(1.5)) % 300}",
            action=str(rng.choice(actions)),
            timestamp=1_700_000_000.0 + offset,
        )
        weight = {"view": 1.0, "cart": 2.0, "purchase": 3.0, "return": -3.0}[action.action]
        state = states.get(user, empty_state()).with_action(action, weight, offset, None)
        states[user] = state
        trainer.apply(user.encode(), table_value(state))
        reference_rows[user] = state.weights()  # what the old Trainer kept
        reference_counts[user] = state.event_count
    assert dict(trainer.rows) == reference_rows
    assert trainer.events == sum(reference_counts.values())
    assert len(trainer.rows) == len(reference_rows)
    assert any(0.0 in row.values() for row in reference_rows.values()), "returns zero rows"


def row_value(items: dict[str, float]) -> bytes:
    entries = {item: [weight, 1, 0.0] for item, weight in items.items()}
    return UserState(items=entries, event_count=len(items)).dumps()


async def test_a_fit_runs_in_the_background_while_records_keep_being_applied():
    # new_item_interval=0: the step after the fit does not fold; the test folds by hand.
    settings = Settings(als_factors=32, als_iterations=15, als_threads=1, new_item_interval=0)
    trainer = Trainer(settings, FakeModels(), owner="test")  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    for user in range(3000):
        trainer.apply(f"u{user}".encode(), row_value(random_row(rng, 800, 20)))
    events_before = trainer.events

    await trainer.step()  # no model yet: starts the fit and returns at once
    assert trainer.fitting is not None and not trainer.fitting.done()
    ticks = 0
    while not trainer.fitting.done():
        ticks += 1
        trainer.apply(f"late{ticks}".encode(), row_value({"i1": 1.0, f"new{ticks}": 2.0}))
        await asyncio.sleep(0.001)
    await trainer.step()  # collects the finished fit (raising its error, if any)
    assert trainer.fitting is None
    assert ticks > 3, "the event loop kept running during the fit"

    model = trainer.model
    assert model is not None and len(trainer.models.published) == 1
    assert trainer.events_at_fit == events_before  # growth counts from the fit's snapshot
    assert "new1" not in model.item_positions
    # Items first seen during the fit wait for the next new-item fold, with their users.
    assert {f"new{t}" for t in range(1, ticks + 1)} <= set(trainer.new_item_users)
    assert trainer.new_item_users["new1"] == {"late1"}
    await trainer.fold_new_items()
    assert "new1" in trainer.model.item_positions and not trainer.new_item_users
    assert trainer.models.published[-1] == trainer.model.version and trainer.deltas == 1


async def test_a_fold_whose_snapshot_is_gone_is_published_as_a_new_snapshot():
    trainer = Trainer(Settings(als_factors=4), FakeModels(deltas_accepted=False), owner="test")  # type: ignore[arg-type]
    for user in range(20):
        trainer.apply(f"u{user}".encode(), row_value({"a": 1.0, f"i{user % 5}": 2.0}))
    await trainer.fit_and_publish("test")
    trainer.apply(b"late", row_value({"a": 1.0, "fresh": 2.0}))
    await trainer.fold_new_items()
    assert "fresh" in trainer.model.item_positions
    assert trainer.models.published == ["1-test", "3-test"]
    assert (trainer.snapshot, trainer.deltas) == ("3-test", 0)


async def test_a_full_fit_publishes_the_factors_of_every_user_it_fitted():
    trainer = Trainer(Settings(als_factors=4), FakeModels(), owner="test")  # type: ignore[arg-type]
    for user in range(20):
        trainer.apply(f"u{user}".encode(), row_value({"a": 1.0, f"i{user % 5}": 2.0}))

    await trainer.fit_and_publish("test")

    user_ids, factors = decode_user_factors(trainer.models.user_factors["1-test"])
    assert sorted(user_ids) == sorted(f"u{user}" for user in range(20))
    assert factors.shape == (20, 4) and factors.dtype == np.float32
    same_rows = [user_ids.index("u0"), user_ids.index("u5")]  # {"a": 1, "i0": 2} both
    assert np.allclose(factors[same_rows[0]], factors[same_rows[1]], atol=1e-4)


async def test_with_user_neighbours_off_a_fit_publishes_no_user_factors():
    settings = Settings(als_factors=4, user_neighbours=False)
    trainer = Trainer(settings, FakeModels(), owner="test")  # type: ignore[arg-type]
    trainer.apply(b"u", row_value({"a": 1.0}))

    await trainer.fit_and_publish("test")

    assert trainer.models.user_factors == {"1-test": None}


async def test_a_failed_background_fit_is_raised_by_the_next_step():
    trainer = Trainer(Settings(als_factors=4), FakeModels(), owner="test")  # type: ignore[arg-type]
    trainer.apply(b"u", row_value({"a": 1.0}))

    async def broken(reason: str, snapshot: object = None) -> None:
        raise RuntimeError("fit failed")

    trainer.fit_and_publish = broken  # type: ignore[method-assign]
    await trainer.step()
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="fit failed"):
        await trainer.step()
    await trainer.stop()
