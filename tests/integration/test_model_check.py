"""The check before a model goes live, on the real Kafka and Redis: a trainer whose later fits
are noise (harness.bad_trainer) has its candidate refused, and the workers keep serving the
model they had."""

from __future__ import annotations

import numpy as np

from harness.http import eventually, get_json, get_metric
from harness.kafka import produce
from harness.worker import running_trainer, running_worker, worker_env

USERS = 120


def purchases(round_: int, seed: int) -> list[dict]:
    """Two taste groups of users buying from their group's twelve items; each round buys items
    the user has not bought before (five in the first, one in each later one)."""
    rng = np.random.default_rng(seed)
    events = []
    for user in range(USERS):
        group = user % 2
        order = np.random.default_rng(user).permutation(12)
        items = order[:5] if round_ == 0 else order[4 + round_ : 5 + round_]
        for item in items:
            events.append(
                {
                    "user_id": f"u{user}",
                    "item_id": f"g{group}-{item}",
                    "action": "purchase",
                    "timestamp": 1_700_000_000.0 + round_ * 86_400 + float(rng.integers(3600)),
                }
            )
    return events


async def all_counted(http, url: str, events: int) -> bool | None:
    """Whether every user's state holds ``events`` events."""
    for user in range(USERS):
        _, state = await get_json(http, f"{url}/users/u{user}")
        if state.get("event_count") != events:
            return None
    return True


async def test_a_deliberately_bad_candidate_is_refused_and_the_serving_model_stays(tmp_path, http):
    # The second fit comes when the 120 second-round events have reached the trainer (growth
    # 0.2 of 600), so all 120 users have a held-out pair; the trainer starts once the first
    # round is applied, so its first fit, the model to beat, is on all of it.
    env = worker_env(
        tmp_path,
        RECSYS_RUN_TRAINER="false",
        RECSYS_RETRAIN_GROWTH="0.2",
        RECSYS_CHECK_MIN_USERS="50",
    )
    with running_worker(env, tmp_path / "worker.log") as worker:
        await produce(worker.topic, purchases(0, seed=1))
        await eventually(lambda: all_counted(http, worker.url, 5), within=30, interval=0.2)
        with running_trainer(env, tmp_path / "trainer.log", "harness.bad_trainer"):

            async def serving():
                return (await get_json(http, f"{worker.url}/health"))[1]["model_version"]

            first = await eventually(serving, within=60, interval=0.2)
            await produce(worker.topic, purchases(1, seed=2))

            async def checked():
                _, health = await get_json(http, f"{worker.url}/health")
                return health if health["last_check"] is not None else None

            health = await eventually(checked, within=60, interval=0.2)
            refused = await get_metric(http, worker.url, "recsys_model_candidates_refused")

    check = health["last_check"]
    assert check["accepted"] is False
    assert (check["users"], check["pairs"]) == (USERS, USERS)
    assert check["candidate"]["HR@10"] < check["serving"]["HR@10"]
    assert health["candidates_refused"] == 1
    assert health["model_version"] == first
    assert refused == 1
    assert f"candidate {check['version']} refused" in (tmp_path / "trainer.log").read_text()
