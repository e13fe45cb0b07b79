"""Dump and restore on the real Kafka and Redis: a deployment dumped, then restored into a fresh
one (new topics, new Redis prefix, no event log), gives the same answers."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from app.evaluation.pipeline import fit_on_what_was_fed
from app.settings import Settings
from app.stores import Stores
from harness.commands import run_app
from harness.data import seed_history
from harness.http import eventually, get_json, post_json
from harness.services import REDIS_URL
from harness.worker import running_worker, worker_env

STILL_MODEL = {"RECSYS_NEW_ITEM_INTERVAL": "1e9"}  # no fold moves the model after the fit
CATALOGUE = [{"item_id": f"a{n}", "title": f"Lamp {n}"} for n in range(10)]
PROBED = ["seed-a1", "seed-b4", "nobody-yet"]


async def answers(http, url: str) -> dict:
    """What the deployment answers: the probed users' lists and states, an item, trending."""
    found = {}
    for user in PROBED:
        _, listed = await get_json(http, f"{url}/recommend/{user}?n=10")
        _, state = await get_json(http, f"{url}/users/{user}")
        found[user] = ([entry["item_id"] for entry in listed["items"]], listed["source"], state)
    found["item"] = await get_json(http, f"{url}/items/a3")
    _, popular = await get_json(http, f"{url}/popular?n=5")
    found["popular"] = [entry["item_id"] for entry in popular["items"]]
    return found


async def test_a_dump_restored_into_a_fresh_deployment_gives_the_same_answers(tmp_path, http):
    events = seed_history()
    for name in ("source", "target"):
        (tmp_path / name).mkdir()
    source = worker_env(tmp_path / "source", **STILL_MODEL)
    redis = Redis.from_url(REDIS_URL)
    with running_worker(source, tmp_path / "source.log") as worker:
        assert (await post_json(http, f"{worker.url}/items", {"items": CATALOGUE}))[0] == 202
        assert (await post_json(http, f"{worker.url}/events", {"events": events}))[0] == 202
        stores = Stores.of(redis, Settings.from_env(source))

        async def all_applied():
            _, state = await get_json(http, f"{worker.url}/users/seed-b19")
            return state if state.get("event_count") == 6 else None

        await eventually(all_applied, within=30, interval=0.2)
        await fit_on_what_was_fed(http, worker.url, stores.models, len(events))
        await asyncio.sleep(1)  # a tick flushes the last popularity
        dumped = await asyncio.to_thread(run_app, ["dump", str(tmp_path / "dump")], source, 120)
        assert dumped.returncode == 0, dumped.stdout + dumped.stderr
        await stores.lists.delete_all()  # lists cached before the fit
        before = await answers(http, worker.url)

    target = worker_env(tmp_path / "target", **STILL_MODEL)
    restored = await asyncio.to_thread(run_app, ["restore", str(tmp_path / "dump")], target, 120)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored 40 users, 10 items" in restored.stdout
    with running_worker(target, tmp_path / "target.log") as worker:

        async def restored_answers():
            found = await answers(http, worker.url)
            ready = all(found[user][1] == before[user][1] for user in PROBED)
            return found if ready and found["item"][0] == 200 else None

        after = await eventually(restored_answers, within=60, interval=0.5)
        again = await asyncio.to_thread(run_app, ["restore", str(tmp_path / "dump")], target, 120)
    await redis.aclose()

    assert after == before
    assert before["seed-a1"][1] == "personal" and before["nobody-yet"][1] == "popular"
    assert again.returncode != 0 and "already has a model" in again.stdout + again.stderr
