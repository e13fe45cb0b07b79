"""``python -m app catch-up``: follows the workers re-applying the log after a replay, on the
real Kafka and Redis, and ends only when every replayed record is in the tables."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from app.settings import Settings
from tests.conftest import ROOT, worker_env
from tests.drill_support import (
    expected_states,
    random_events,
    read_states,
    states_equal,
    worker_process,
)
from tests.test_progress import run_in_terminal
from tests.test_replay import produce, run_replay, wait_for_states

pytestmark = pytest.mark.integration


async def test_catch_up_ends_once_every_replayed_record_is_applied_on_a_terminal_or_not(
    tmp_path, http
):
    events = random_events(300, range(30), items=20, seed=5)
    expected = expected_states(events, Settings())
    env = worker_env(tmp_path)
    with worker_process(env, tmp_path / "worker.log") as process:
        await produce(process.worker.topic, events)
        await wait_for_states(http, process.url, expected)
    await asyncio.to_thread(run_replay, env)

    with worker_process(env, tmp_path / "worker.log") as process:
        followed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app", "catch-up"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
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
