"""Crash drills on the real Kafka: kill -9 the worker mid-stream and check every user's state
against ground truth computed from what was sent. Nothing may be lost or counted twice."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from app.settings import Settings
from tests.conftest import KAFKA_BOOTSTRAP, eventually, get_metric, worker_env
from tests.drill_support import (
    WorkerProcess,
    count_differences,
    expected_states,
    random_events,
    read_states,
    states_equal,
    worker_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.drill]

USERS = range(1_000)
EVENTS = 30_000
NEW_USERS = 10_000
CHUNK = 1_000
CHUNK_PAUSE = 0.2
CATCH_UP_LIMIT = 120.0


async def produce(topic: str, events: list[dict[str, Any]]) -> None:
    """Send events straight to Kafka keyed by user, as any client would, a chunk at a time."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(events), CHUNK):
            pending = [
                await producer.send(
                    topic, json.dumps(event).encode(), key=event["user_id"].encode()
                )
                for event in events[start : start + CHUNK]
            ]
            await asyncio.gather(*pending)
            await asyncio.sleep(CHUNK_PAUSE)
    finally:
        await producer.stop()


async def kill_mid_stream(http, process: WorkerProcess, applied_at_least: int) -> None:
    """kill -9 once the worker has applied this many events since it started."""

    async def applying():
        applied = await get_metric(http, process.url, "recsys_events_processed_total")
        return applied if applied >= applied_at_least else None

    await eventually(applying, within=60, interval=0.05)
    process.kill()


async def wait_for_ground_truth(http, url: str, expected: dict[str, Any]) -> float:
    """Seconds until every user's state equals the ground truth; fails with a diff count."""
    started = time.monotonic()
    users = sorted(expected)
    actual: dict[str, Any] = {}
    while time.monotonic() - started < CATCH_UP_LIMIT:
        actual = await read_states(http, url, users)
        if all(states_equal(expected[user], actual[user]) for user in users):
            return time.monotonic() - started
        await asyncio.sleep(1)
    missing, extra = count_differences(expected, actual)
    pytest.fail(f"state differs from ground truth: {missing} events missing, {extra} extra")


def drill_env(tmp_path) -> dict[str, str]:
    return worker_env(tmp_path, RECSYS_RUN_TRAINER="false")


async def test_a_worker_killed_mid_stream_restarts_with_every_event_counted_exactly_once(
    tmp_path, http
):
    events = random_events(EVENTS, USERS, items=400, seed=11)
    with worker_process(drill_env(tmp_path), tmp_path / "worker.log") as process:
        sending = asyncio.create_task(produce(process.worker.topic, events))
        await kill_mid_stream(http, process, applied_at_least=EVENTS // 4)
        await sending  # the rest lands in Kafka while the worker is down
        killed_at = time.monotonic()
        process.start()
        ready = await asyncio.to_thread(process.wait_ready)
        caught_up = await wait_for_ground_truth(
            http, process.url, expected_states(events, Settings())
        )
        skipped = await get_metric(http, process.url, "recsys_duplicates_skipped_total")
        print(
            f"\ncrash drill: {len(events)} events, {len(USERS)} users; ready {ready:.1f} s after "
            f"restart, ground truth {time.monotonic() - killed_at:.1f} s after the kill "
            f"({caught_up:.1f} s after ready); re-delivered and skipped: "
            f"{skipped:g}"
        )
        assert skipped > 0, "the drill must make Kafka re-deliver events"


async def test_with_the_data_folder_deleted_after_a_crash_the_changelog_alone_holds_every_event(
    tmp_path, http
):
    # One event per user: a user whose event was in flight when the worker died has no later
    # event whose state would carry it into the changelog. Only the state written again when
    # the event is re-delivered after the restart can (see apply_event).
    events = random_events(NEW_USERS, range(NEW_USERS), items=400, seed=12)
    events = [{**event, "user_id": f"user-{n}"} for n, event in enumerate(events)]
    expected = expected_states(events, Settings())
    with worker_process(drill_env(tmp_path), tmp_path / "worker.log") as process:
        sending = asyncio.create_task(produce(process.worker.topic, events))
        await kill_mid_stream(http, process, applied_at_least=NEW_USERS // 4)
        await sending
        process.start()  # keeps the local tables, which may be ahead of the changelog
        await asyncio.to_thread(process.wait_ready)
        await wait_for_ground_truth(http, process.url, expected)
        skipped = await get_metric(http, process.url, "recsys_duplicates_skipped_total")
        process.kill()
        shutil.rmtree(process.data_dir)
        process.start()
        ready = await asyncio.to_thread(process.wait_ready)
        caught_up = await wait_for_ground_truth(http, process.url, expected)
        print(
            f"\nchangelog-only drill: {len(events)} users with one event each; re-delivered and "
            f"skipped after the crash: {skipped:g}; ready {ready:.1f} s after "
            f"a restart without data folder, ground truth {caught_up:.1f} s later"
        )
        assert skipped > 0, "the drill must make Kafka re-deliver events"
