"""The automatic rollback on the real Kafka and Redis: with the pre-publication check off, a
trainer whose second fit is noise (harness.bad_trainer) puts a bad model live; the workers'
live HR@10 of its lists falls below the first model's, and the trainer rolls it back."""

from __future__ import annotations

import numpy as np

from harness.http import eventually, get_json, post_json
from harness.kafka import produce
from harness.worker import running_trainer, running_worker, worker_env

USERS = 120
GROUP_ITEMS = 40


def purchases(round_: int) -> list[dict]:
    """Each user of two taste groups buys the next item of a fixed random order of their
    group's items (the first round buys five)."""
    events = []
    for user in range(USERS):
        order = np.random.default_rng(user).permutation(GROUP_ITEMS)
        items = order[:5] if round_ == 0 else order[4 + round_ : 5 + round_]
        events += [
            {
                "user_id": f"u{user}",
                "item_id": f"g{user % 2}-{item}",
                "action": "purchase",
                "timestamp": 1_700_000_000.0 + round_ * 3600 + user,
            }
            for item in items
        ]
    return events


async def play_round(http, worker, round_: int, events: int) -> None:
    """Send a round and wait until every user's list has taken it in (so it was tested against
    the list before and a new list was written)."""
    await produce(worker.topic, purchases(round_))

    async def all_listed():
        for user in range(USERS):
            _, body = await get_json(http, f"{worker.url}/recommend/u{user}")
            if body["event_count"] != events:
                return None
        return True

    await eventually(all_listed, within=60, interval=0.2)


async def serving(http, worker) -> str | None:
    return (await get_json(http, f"{worker.url}/health"))[1]["model_version"]


async def test_a_model_doing_worse_live_than_the_one_before_is_rolled_back(tmp_path, http):
    env = worker_env(
        tmp_path,
        RECSYS_RUN_TRAINER="false",
        RECSYS_CHECK_PAIRS="0",  # the bad model must go live for the live comparison to see it
        RECSYS_ROLLBACK_MIN_TRIALS="200",
        RECSYS_RETRAIN_GROWTH="0",  # the retrain asked for below is the only refit
        RECSYS_ALS_FACTORS="16",
    )
    with (
        running_worker(env, tmp_path / "worker.log") as worker,
        running_trainer(env, tmp_path / "trainer.log", "harness.bad_trainer"),
    ):
        await produce(worker.topic, purchases(0))
        first = await eventually(lambda: serving(http, worker), within=60, interval=0.2)
        for round_ in (1, 2, 3):  # lists from the first model, and at least 240 trials on them
            await play_round(http, worker, round_, 5 + round_)

        assert (await post_json(http, f"{worker.url}/admin/retrain", {}))[0] == 202

        async def bad_model_live():
            version = await serving(http, worker)
            return version if version not in (None, first) else None

        bad = await eventually(bad_model_live, within=60, interval=0.2)
        for round_ in (4, 5, 6):  # lists from the bad model, then trials on them
            await play_round(http, worker, round_, 5 + round_)

        async def rolled_back():
            _, health = await get_json(http, f"{worker.url}/health")
            return health if health["last_rollback"] is not None else None

        health = await eventually(rolled_back, within=30, interval=0.2)

        async def first_served_again():
            return True if await serving(http, worker) == first else None

        await eventually(first_served_again, within=5, interval=0.1)

    rollback = health["last_rollback"]
    assert rollback["rolled_back"] != first and rollback["to"] == first
    assert rollback["trials"] >= 200 and rollback["previous_trials"] >= 200
    assert rollback["live_hit_rate"] < 0.8 * rollback["previous_live_hit_rate"]
    assert rollback["rolled_back"] == bad
    assert f"back to {first}" in (tmp_path / "trainer.log").read_text()
