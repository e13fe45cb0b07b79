"""An experiment on the real Kafka and Redis: the bundled Online Retail sample replayed through a
worker whose users are dealt into two arms, online fold-in on and off. Both arms' live HR@10 is
in ``/metrics`` and ``GET /experiments``, with the fold-in arm ahead; a list names its arm and
an id that the events answering it carry into the arm's click-through."""

from __future__ import annotations

import csv

from harness.data import SAMPLE_EVENTS
from harness.http import eventually, get_json, get_metric, post_json
from harness.kafka import produce
from harness.worker import running_worker, worker_env

ARMS = "fold-in:1,batch:1:fold_in=off"
ROUND_PAUSE = 0.2  # seconds: past the p99 from an event to its user's new list


def sample_events() -> list[dict]:
    with SAMPLE_EVENTS.open(newline="") as rows:
        return [{**row, "timestamp": float(row["timestamp"])} for row in csv.DictReader(rows)]


def rounds(events: list[dict]) -> list[list[dict]]:
    """The events as rounds of each user's next event: sent a round at a time, a user's events
    come a moment apart, as a visitor's do, with a new list in between. (Sent as fast as Kafka
    takes them, an invoice's lines fall into one batch and are all scored against the list from
    before the invoice.)"""
    by_user: dict[str, list[dict]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)
    longest = max(map(len, by_user.values()))
    return [[own[n] for own in by_user.values() if n < len(own)] for n in range(longest)]


async def processed_at_least(http, url: str, count: int) -> None:
    async def applied():
        done = await get_metric(http, url, "recsys_events_processed_total")
        return True if done >= count else None

    await eventually(applied, within=120, interval=0.5)


async def flushed_report(http, url: str) -> dict:
    """``GET /experiments`` once it holds every trial this worker counted."""

    async def flushed():
        _, report = await get_json(http, f"{url}/experiments")
        trials = sum(arm["trials"] for arm in report["arms"])
        counted = await get_metric(http, url, "recsys_experiment_total", counter="trials")
        return report if trials == counted else None

    return await eventually(flushed, within=30, interval=0.5)


async def serving(http, url: str) -> str | None:
    return (await get_json(http, f"{url}/health"))[1]["model_version"]


async def test_the_fold_in_arm_is_ahead_of_the_batch_arm_live_and_clicks_are_attributed(
    tmp_path, http
):
    events = sample_events()
    warm_up, stream = events[: len(events) // 2], events[len(events) // 2 :]
    env = worker_env(
        tmp_path,
        RECSYS_EXPERIMENT_ARMS=ARMS,
        RECSYS_ALS_FACTORS="16",
        RECSYS_RETRAIN_GROWTH="0",  # one model through the stream: the fit after the warm-up
        RECSYS_NEW_ITEM_INTERVAL="0",
        RECSYS_CHECK_PAIRS="0",
    )
    with running_worker(env, tmp_path / "worker.log") as worker:
        await produce(worker.topic, warm_up)
        await processed_at_least(http, worker.url, len(warm_up))
        first = await eventually(lambda: serving(http, worker.url), within=60, interval=0.2)
        assert (await post_json(http, f"{worker.url}/admin/retrain", {}))[0] == 202

        async def refitted():
            version = await serving(http, worker.url)
            return version if version not in (None, first) else None

        await eventually(refitted, within=60, interval=0.2)
        before = {arm["arm"]: arm for arm in (await flushed_report(http, worker.url))["arms"]}
        for round_ in rounds(stream):
            await produce(worker.topic, round_, pause=ROUND_PAUSE)
        await processed_at_least(http, worker.url, len(events))
        report = await flushed_report(http, worker.url)
        hits = {
            arm: await get_metric(http, worker.url, "recsys_experiment_total", arm=arm, counter=c)
            for arm in ("fold-in", "batch")
            for c in ("hits",)
        }

        user = events[-1]["user_id"]
        status, listed = await get_json(http, f"{worker.url}/recommend/{user}")
        answer = {
            "user_id": user,
            "item_id": listed["items"][0]["item_id"],
            "action": "click",
            "recommendation_id": listed["recommendation_id"],
        }
        assert (await post_json(http, f"{worker.url}/events", answer))[0] == 202

        async def answered():
            _, now = await get_json(http, f"{worker.url}/experiments")
            arm = next(entry for entry in now["arms"] if entry["arm"] == listed["arm"])
            return arm if arm["answered"] == 1 else None

        attributed = await eventually(answered, within=30, interval=0.2)
        ratio = {
            arm: await get_metric(
                http, worker.url, "recsys_experiment_live_hit_at_10_ratio", arm=arm
            )
            for arm in ("fold-in", "batch")
        }

    fold_in, batch = report["arms"]
    assert (fold_in["arm"], batch["arm"]) == ("fold-in", "batch")
    stream_rate = {
        arm["arm"]: (arm["hits"] - before[arm["arm"]]["hits"])
        / (arm["trials"] - before[arm["arm"]]["trials"])
        for arm in report["arms"]
    }
    print(f"stream HR@10 per arm: {stream_rate}; /metrics: {ratio} {hits}; report: {report}")
    assert fold_in["trials"] - before["fold-in"]["trials"] > 500
    assert batch["trials"] - before["batch"]["trials"] > 500
    assert stream_rate["fold-in"] > stream_rate["batch"]
    assert ratio["fold-in"] > ratio["batch"]
    assert batch["hit_rate_vs_control"]["value"] < 0
    assert status == 200 and listed["recommendation_id"].startswith(f"{listed['arm']}.")
    assert attributed["served"] >= 1 and attributed["click_through"]["value"] > 0
