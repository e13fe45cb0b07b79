"""Hiding on the real Kafka and Redis: ``POST /users/{id}/hidden`` keeps items out of a user's
lists across a restart of the worker and a replay of the raw log."""

from __future__ import annotations

import asyncio

from harness.commands import run_replay
from harness.http import eventually, get_json, post_json
from harness.worker import running_worker, worker_env

POPULAR = [f"hot{n}" for n in range(4)]


async def hidden_and_listed(http, url: str, user_id: str) -> tuple[list[str], list[str]] | None:
    """The user's hidden items and their list, once they have all their events."""
    status, state = await get_json(http, f"{url}/users/{user_id}")
    if status != 200 or state["event_count"] != 1:
        return None
    _, listed = await get_json(http, f"{url}/recommend/{user_id}?n=10")
    return state["hidden"], [entry["item_id"] for entry in listed["items"]]


async def test_a_hide_survives_a_restart_and_a_replay(tmp_path, http):
    env = worker_env(tmp_path, RECSYS_RUN_TRAINER="false")  # no model: popular lists
    crowd = [
        {"user_id": f"crowd{n}", "item_id": item, "action": "purchase"}
        for n in range(3)
        for item in POPULAR
    ]
    own = {"user_id": "hider", "item_id": "quiet", "action": "view"}
    with running_worker(env, tmp_path / "worker.log") as worker:
        assert (await post_json(http, f"{worker.url}/events", {"events": [*crowd, own]}))[0] == 202
        hide = {"items": ["hot0", "hot1"]}
        assert (await post_json(http, f"{worker.url}/users/hider/hidden", hide))[0] == 202
        async with http.delete(f"{worker.url}/users/hider/hidden/hot1") as response:
            assert response.status == 202

        async def settled():
            found = await hidden_and_listed(http, worker.url, "hider")
            return found if found and found[0] == ["hot0"] and "hot1" in found[1] else None

        hidden, listed = await eventually(settled, within=20, interval=0.2)
        assert "hot0" not in listed and {"hot1", "hot2", "hot3"} <= set(listed)

    with running_worker(env, tmp_path / "worker.log") as worker:
        restarted = await eventually(
            lambda: hidden_and_listed(http, worker.url, "hider"), within=30, interval=0.2
        )
    assert restarted == (hidden, listed)

    await asyncio.to_thread(run_replay, env)
    with running_worker(env, tmp_path / "worker.log") as worker:

        async def replayed():
            found = await hidden_and_listed(http, worker.url, "hider")
            return found if found and set(POPULAR) - {"hot0"} <= set(found[1]) else None

        assert await eventually(replayed, within=60, interval=0.2) == (["hot0"], listed)
