"""``python -m app replay`` on the real Kafka and Redis: change a weight, replay the raw log, and
every derived state (tables, popularity, lists, model) equals the recomputation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from app.settings import Settings
from app.stores.keys import RedisKeys
from app.stores.model import ModelStore, decode_model
from harness.commands import run_replay
from harness.ground_truth import (
    expected_states,
    random_events,
    read_states,
    wait_for_ground_truth,
)
from harness.http import eventually, get_json
from harness.kafka import produce
from harness.services import KAFKA_BOOTSTRAP, REDIS_URL
from harness.worker import running_worker, worker_env

USERS = range(100)
NEW_WEIGHTS = "view=3,click=1,purchase=2,return=-2"
HALF_LIFE = 604800.0


async def wait_for_states(http, url: str, expected: dict[str, Any]) -> None:
    await wait_for_ground_truth(http, url, expected, within=60, interval=0.5)


def expected_popularity(events: list[dict[str, Any]], settings: Settings, now: float) -> dict:
    """Each item's decayed positive weight at ``now``, summed directly."""
    scores: dict[str, float] = defaultdict(float)
    for event in events:
        weight = settings.weight(event["action"])
        if weight > 0:
            scores[event["item_id"]] += weight * 2 ** ((event["timestamp"] - now) / HALF_LIFE)
    return scores


async def model_events(redis: Redis, prefix: str) -> int | None:
    """How many events the published model was fitted on (None before a full fit)."""
    models = ModelStore(redis, RedisKeys(prefix))
    version = await models.snapshot_version()
    blob = None if version is None else await models.load(version)
    if blob is None:
        return None
    _, meta = decode_model(blob)
    return meta["metrics"].get("events")


async def test_after_a_weight_change_a_replay_rebuilds_state_popularity_lists_and_model(
    tmp_path, http
):
    events = random_events(2_000, USERS, items=50, seed=21)
    mis_keyed = random_events(20, USERS, items=50, seed=22)  # re-keyed by the worker
    env = worker_env(tmp_path)
    with running_worker(env, tmp_path / "worker.log") as process:
        await produce(process.topic, events)
        await produce(process.topic, mis_keyed, keyed=False)
        await wait_for_states(http, process.url, expected_states(events + mis_keyed, Settings()))

    new_env = {**env, "RECSYS_ACTION_WEIGHTS": NEW_WEIGHTS}
    replayed_at = time.time()
    output = await asyncio.to_thread(run_replay, new_env)
    assert "2040 records to re-apply" in output  # each mis-keyed message and its re-keyed copy

    new_settings = Settings.from_env({"RECSYS_ACTION_WEIGHTS": NEW_WEIGHTS})
    with running_worker(new_env, tmp_path / "worker.log") as process:
        await wait_for_states(http, process.url, expected_states(events + mis_keyed, new_settings))

        redis = Redis.from_url(REDIS_URL)
        try:
            fitted_on = await eventually(
                lambda: model_events_if(redis, process.redis_prefix, 2_020),
                within=60,
                interval=0.5,
            )
        finally:
            await redis.aclose()
        assert fitted_on == 2_020

        # Popularity reaches Redis on the tick after the events are applied (up to
        # RECSYS_FOLD_IN_INTERVAL later), and a growth refit may publish the model before that.
        popularity: dict[str, list] = {}

        async def popularity_rebuilt():
            _, popular = await get_json(http, f"{process.url}/popular?n=10")
            replayed = events + mis_keyed
            newest = max(event["timestamp"] for event in replayed)  # stream time
            expected = expected_popularity(replayed, new_settings, newest)
            top = sorted(expected, key=expected.get, reverse=True)[:10]
            popularity["served"] = [(e["item_id"], e["score"]) for e in popular["items"]]
            popularity["as_of"] = [popular["as_of"], pytest.approx(newest)]
            popularity["expected"] = [(i, pytest.approx(expected[i], rel=1e-4)) for i in top]
            matched = popularity["served"] == popularity["expected"]
            return True if matched and popularity["as_of"][0] == popularity["as_of"][1] else None

        with contextlib.suppress(AssertionError):
            await eventually(popularity_rebuilt, within=5, interval=0.2)
        assert popularity["served"] == popularity["expected"]
        assert popularity["as_of"][0] == popularity["as_of"][1]

        for user in ("user-0", "user-50", "user-99"):
            _, listed = await get_json(http, f"{process.url}/recommend/{user}")
            assert listed["updated_at"] > replayed_at


async def model_events_if(redis: Redis, prefix: str, events: int) -> int | None:
    fitted_on = await model_events(redis, prefix)
    return fitted_on if fitted_on == events else None


async def test_a_replay_since_a_time_rebuilds_state_from_the_events_logged_after_it(tmp_path, http):
    now = time.time()
    older = random_events(500, USERS, items=50, seed=23)
    newer = random_events(500, USERS, items=50, seed=24)
    env = worker_env(tmp_path, RECSYS_RUN_TRAINER="false")
    with running_worker(env, tmp_path / "worker.log") as process:
        await produce(process.topic, older, timestamp_ms=int((now - 7200) * 1000))
        await produce(process.topic, newer, timestamp_ms=int(now * 1000))
        await wait_for_states(http, process.url, expected_states(older + newer, Settings()))

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    output = await asyncio.to_thread(run_replay, env, "--since", since)
    assert "500 records to re-apply" in output

    with running_worker(env, tmp_path / "worker.log") as process:
        expected = expected_states(newer, Settings())
        await wait_for_states(http, process.url, expected)
        only_older = {e["user_id"] for e in older} - {e["user_id"] for e in newer}
        states = await read_states(http, process.url, sorted(only_older))
        assert all(state is None for state in states.values())


async def test_the_raw_log_is_kept_forever_so_it_can_be_replayed(worker):
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, worker.topic, {"retention.ms": None})]
        )
    finally:
        await admin.close()
    [(_, _, _, _, entries)] = response.resources
    assert {entry[0]: entry[1] for entry in entries}["retention.ms"] == "-1"
