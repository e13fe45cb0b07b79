"""Kafka restarted under load, on a broker of the test's own (the shared one keeps running).

While Kafka cannot acknowledge, POST /events answers 503 with Retry-After, never a 202; the
worker and ingestion recover by themselves once it is back. A 503 does not mean the event was
not written (the producer may still deliver it), so clients retry with the same ``event_id``,
and every event ends up counted exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from harness.ground_truth import read_states
from harness.http import Answer, eventually, get_json, get_metric, post_all_along
from harness.services import KafkaBroker
from harness.worker import running_worker, worker_env

USERS = 10


RETRY_DELAY_CAP = 1.0
"""Seconds a client waits before retrying: Retry-After, capped to keep the test short."""


def event(index: int) -> dict[str, str]:
    """A new event for each post, each with an item of its own."""
    return {
        "user_id": f"user-{index % USERS}",
        "item_id": f"item-{index}",
        "action": "view",
        "event_id": f"event-{index}",
    }


async def test_across_a_kafka_restart_posts_get_503_until_it_is_back_and_retried_events_count_once(
    tmp_path, http
):
    broker = KafkaBroker(tmp_path / "kafka")
    await asyncio.to_thread(broker.start)
    env = worker_env(
        tmp_path,
        RECSYS_KAFKA_BROKER=f"kafka://{broker.bootstrap}",
        RECSYS_RUN_TRAINER="false",
        RECSYS_PRODUCE_TIMEOUT="2",
    )
    answers: list[Answer] = []
    try:
        with running_worker(env, tmp_path / "worker.log") as process:
            posting = asyncio.create_task(
                post_all_along(
                    http, f"{process.url}/events", event, 0.05, answers, retry_cap=RETRY_DELAY_CAP
                )
            )

            async def consuming():
                status, body = await get_json(http, f"{process.url}/users/user-0")
                return body if status == 200 else None

            await eventually(consuming, within=30, interval=0.2)
            await asyncio.sleep(2)
            await asyncio.to_thread(broker.stop)
            down_at = time.monotonic()
            await asyncio.sleep(5)
            await asyncio.to_thread(broker.start)
            up_at = time.monotonic()

            async def accepted_again():
                return any(a.status == 202 and a.sent_at > up_at for a in answers) or None

            await eventually(accepted_again, within=60, interval=0.2)
            recovered = time.monotonic() - up_at
            await asyncio.sleep(2)
            posting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await posting
            events = {f"item-{a.index}" for a in answers}

            async def every_event_counted():
                states = await read_states(http, process.url, [f"user-{u}" for u in range(USERS)])
                counts = {
                    item: entry["count"]
                    for state in states.values()
                    if state is not None
                    for item, entry in state["interactions"].items()
                }
                return counts if events <= counts.keys() else None

            counts = await eventually(every_event_counted, within=60, interval=0.5)
            _, health = await get_json(http, f"{process.url}/health")
            skipped = await get_metric(http, process.url, "recsys_duplicates_skipped_total")
    finally:
        await asyncio.to_thread(broker.stop)

    refused = [a for a in answers if a.status == 503]
    print(
        f"\nKafka restart: {len(events)} events, {len(answers)} posts, {len(refused)} got 503 "
        f"(the broker was down {up_at - down_at:.1f} s; ingestion back {recovered:.1f} s after "
        f"it); retried events recognised by event_id: {skipped:g}"
    )
    assert {a.status for a in answers} <= {202, 503}
    assert refused, "some posts must have met the outage"
    assert all(a.retry_after for a in refused)
    assert health["status"] == "ready"
    assert counts == dict.fromkeys(events, 1), "every event counted exactly once"
