"""Erasure on the real Kafka and Redis: ``DELETE /users/{id}`` removes the user's state, held
history and cached list, a replay of the raw log does not bring them back, and
``DELETE /items/{id}`` withdraws an item from every list."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from harness.commands import run_replay
from harness.http import eventually, get_json, post_json
from harness.services import REDIS_URL
from harness.worker import running_worker, worker_env


def events(user_id: str, items: range) -> dict:
    return {"events": [{"user_id": user_id, "item_id": f"i{n}", "action": "click"} for n in items]}


async def user_status(http, url: str, user_id: str) -> int:
    return (await get_json(http, f"{url}/users/{user_id}"))[0]


async def test_an_erased_user_is_gone_from_state_and_lists_and_a_replay_does_not_bring_them_back(
    tmp_path, http
):
    env = worker_env(tmp_path, RECSYS_RUN_TRAINER="false")
    redis = Redis.from_url(REDIS_URL)
    cached = f"{env['RECSYS_REDIS_PREFIX']}:rec:erase-me"
    with running_worker(env, tmp_path / "worker.log") as worker:
        for user_id in ("erase-me", "keep-me"):
            posted, _ = await post_json(http, f"{worker.url}/events", events(user_id, range(5)))
            assert posted == 202

        async def both_listed() -> bool | None:
            users = [await user_status(http, worker.url, u) for u in ("erase-me", "keep-me")]
            return True if users == [200, 200] and await redis.exists(cached) else None

        await eventually(both_listed, within=20, interval=0.2)
        async with http.delete(f"{worker.url}/users/erase-me") as response:
            assert response.status == 202

        async def erased() -> bool | None:
            gone = await user_status(http, worker.url, "erase-me") == 404
            return True if gone and not await redis.exists(cached) else None

        await eventually(erased, within=20, interval=0.2)
        assert await user_status(http, worker.url, "keep-me") == 200

    await asyncio.to_thread(run_replay, env)
    with running_worker(env, tmp_path / "worker.log") as worker:

        async def replayed() -> bool | None:
            return True if await user_status(http, worker.url, "keep-me") == 200 else None

        await eventually(replayed, within=30, interval=0.2)
        assert await user_status(http, worker.url, "erase-me") == 404
        assert not await redis.exists(cached)
    await redis.aclose()


async def status_is(http, url: str, user_id: str, status: int) -> bool | None:
    return True if await user_status(http, url, user_id) == status else None


async def test_a_user_who_acts_after_their_erasure_starts_afresh(worker, http):
    url = worker.url
    assert (await post_json(http, f"{url}/events", events("comes-back", range(4))))[0] == 202
    await eventually(lambda: status_is(http, url, "comes-back", 200), within=20, interval=0.2)
    async with http.delete(f"{url}/users/comes-back") as response:
        assert response.status == 202
    assert (await post_json(http, f"{url}/events", events("comes-back", range(9, 10))))[0] == 202

    async def afresh() -> dict | None:
        status, body = await get_json(http, f"{url}/users/comes-back")
        return body if status == 200 and body["event_count"] == 1 else None

    body = await eventually(afresh, within=20, interval=0.2)
    assert set(body["interactions"]) == {"i9"}


async def test_a_withdrawn_item_keeps_its_record_marked_unavailable(worker, http):
    url = worker.url
    kettle = {"item_id": "withdrawn-1", "title": "Kettle"}
    assert (await post_json(http, f"{url}/items", kettle))[0] == 202

    async def stored() -> bool | None:
        return True if (await get_json(http, f"{url}/items/withdrawn-1"))[0] == 200 else None

    await eventually(stored, within=20, interval=0.2)
    async with http.delete(f"{url}/items/withdrawn-1") as response:
        assert response.status == 202

    async def withdrawn() -> dict | None:
        status, body = await get_json(http, f"{url}/items/withdrawn-1")
        return body if status == 200 and body["available"] is False else None

    assert (await eventually(withdrawn, within=20, interval=0.2))["title"] == "Kettle"
