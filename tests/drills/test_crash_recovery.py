"""Crash drills on the real Kafka: kill -9 the worker mid-stream and check every user's state
against ground truth computed from what was sent. Nothing may be lost or counted twice."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

from app.settings import Settings
from harness.ground_truth import expected_states, random_events, wait_for_ground_truth
from harness.http import eventually, get_metric
from harness.kafka import produce
from harness.worker import WorkerProcess, running_worker, worker_env

USERS = range(1_000)
EVENTS = 30_000
NEW_USERS = 10_000
CHUNK = 1_000
CHUNK_PAUSE = 0.2
CATCH_UP_LIMIT = 120.0
CATCH_UP_INTERVAL = 1.0


async def kill_mid_stream(http, process: WorkerProcess, applied_at_least: int) -> None:
    """kill -9 once the worker has applied this many events since it started."""

    async def applying():
        applied = await get_metric(http, process.url, "recsys_events_processed_total")
        return applied if applied >= applied_at_least else None

    await eventually(applying, within=60, interval=0.05)
    process.kill()


async def caught_up(http, url: str, expected: dict[str, Any]) -> float:
    """Seconds until every user's state equals the ground truth; fails with a diff count."""
    return await wait_for_ground_truth(
        http, url, expected, within=CATCH_UP_LIMIT, interval=CATCH_UP_INTERVAL
    )


def drill_env(tmp_path) -> dict[str, str]:
    return worker_env(tmp_path, RECSYS_RUN_TRAINER="false")


async def test_a_worker_killed_mid_stream_restarts_with_every_event_counted_exactly_once(
    tmp_path, http
):
    events = random_events(EVENTS, USERS, items=400, seed=11)
    with running_worker(drill_env(tmp_path), tmp_path / "worker.log") as process:
        sending = asyncio.create_task(
            produce(process.topic, events, chunk=CHUNK, pause=CHUNK_PAUSE)
        )
        await kill_mid_stream(http, process, applied_at_least=EVENTS // 4)
        await sending  # the rest lands in Kafka while the worker is down
        killed_at = time.monotonic()
        process.start()
        ready = await asyncio.to_thread(process.wait_ready)
        caught_up_in = await caught_up(http, process.url, expected_states(events, Settings()))
        skipped = await get_metric(http, process.url, "recsys_duplicates_skipped_total")
        print(
            f"\ncrash drill: {len(events)} events, {len(USERS)} users; ready {ready:.1f} s after "
            f"restart, ground truth {time.monotonic() - killed_at:.1f} s after the kill "
            f"({caught_up_in:.1f} s after ready); re-delivered and skipped: "
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
    with running_worker(drill_env(tmp_path), tmp_path / "worker.log") as process:
        sending = asyncio.create_task(
            produce(process.topic, events, chunk=CHUNK, pause=CHUNK_PAUSE)
        )
        await kill_mid_stream(http, process, applied_at_least=NEW_USERS // 4)
        await sending
        process.start()  # keeps the local tables, which may be ahead of the changelog
        await asyncio.to_thread(process.wait_ready)
        await caught_up(http, process.url, expected)
        skipped = await get_metric(http, process.url, "recsys_duplicates_skipped_total")
        process.kill()
        shutil.rmtree(process.data_dir)
        process.start()
        ready = await asyncio.to_thread(process.wait_ready)
        caught_up_in = await caught_up(http, process.url, expected)
        print(
            f"\nchangelog-only drill: {len(events)} users with one event each; re-delivered and "
            f"skipped after the crash: {skipped:g}; ready {ready:.1f} s after "
            f"a restart without data folder, ground truth {caught_up_in:.1f} s later"
        )
        assert skipped > 0, "the drill must make Kafka re-deliver events"
