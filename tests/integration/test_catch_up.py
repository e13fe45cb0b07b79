"""``python -m app catch-up``: follows the workers re-applying the log after a replay, on the
real Kafka and Redis, and ends only when every replayed record is in the tables."""

from __future__ import annotations

import asyncio

from app.settings import Settings
from harness.commands import run_app, run_in_terminal, run_replay
from harness.ground_truth import (
    expected_states,
    random_events,
    read_states,
    states_equal,
    wait_for_ground_truth,
)
from harness.kafka import produce
from harness.worker import running_worker, worker_env


async def test_catch_up_ends_once_every_replayed_record_is_applied_on_a_terminal_or_not(
    tmp_path, http
):
    events = random_events(300, range(30), items=20, seed=5)
    expected = expected_states(events, Settings())
    env = worker_env(tmp_path)
    with running_worker(env, tmp_path / "worker.log") as process:
        await produce(process.topic, events)
        await wait_for_ground_truth(http, process.url, expected, within=60, interval=0.5)
    await asyncio.to_thread(run_replay, env)

    with running_worker(env, tmp_path / "worker.log") as process:
        followed = await asyncio.to_thread(run_app, ["catch-up"], env, timeout=120)
        assert followed.returncode == 0, followed.stdout + followed.stderr
        assert "all 300 records re-applied" in followed.stdout
        actual = await read_states(http, process.url, sorted(expected))
        assert all(states_equal(expected[user], actual[user]) for user in expected)

        code, shown = await asyncio.to_thread(
            run_in_terminal, ["catch-up"], env, tmp_path / "out.txt"
        )
        assert code == 0, shown
        assert "300/300" in shown, "on a terminal, the bar is drawn"


def test_catch_up_without_a_replay_says_there_is_nothing_to_follow(tmp_path):
    code, shown = run_in_terminal(["catch-up"], worker_env(tmp_path), tmp_path / "out.txt")
    assert code == 1
    assert "no replay in the last 7 days" in shown
