"""``POST /admin/rollback`` and ``python -m app rollback`` with two workers of one deployment on
the real Kafka and Redis: both switch back, and the trainer continues from the model rolled
back to instead of publishing over it."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from app.stores.keys import RedisKeys
from app.stores.model import KEPT_VERSIONS, ModelStore, version_sequence
from harness.commands import run_app
from harness.data import seed_history
from harness.http import eventually, get_json, post_json
from harness.services import REDIS_URL, free_port
from harness.worker import running_worker, worker_env

SWITCH_LIMIT = 3.0  # workers look at the current version every second


async def served(http, workers) -> set[str | None]:
    return {(await get_json(http, f"{w.url}/health"))[1]["model_version"] for w in workers}


async def test_a_rollback_switches_both_workers_and_the_trainer_follows(tmp_path, http):
    for folder in ("w1", "w2"):
        (tmp_path / folder).mkdir()
    first_env = worker_env(tmp_path / "w1", RECSYS_NEW_ITEM_INTERVAL="0.5")
    second_env = {
        **first_env,
        "RECSYS_WEB_PORT": str(free_port()),
        "RECSYS_DATA_DIR": str(tmp_path / "w2" / "data"),
    }
    redis = Redis.from_url(REDIS_URL)
    models = ModelStore(redis, RedisKeys(first_env["RECSYS_REDIS_PREFIX"]))
    try:
        with (
            running_worker(first_env, tmp_path / "w1.log") as first,
            running_worker(second_env, tmp_path / "w2.log") as second,
        ):
            workers = (first, second)
            assert (await post_json(http, f"{first.url}/events", {"events": seed_history()}))[
                0
            ] == 202

            async def one_model_everywhere(newer_than: int = 0):
                versions = await served(http, workers)
                (version,) = versions if len(versions) == 1 else (None,)
                fresh = version is not None and version_sequence(version) > newer_than
                return version if fresh else None

            old = await eventually(one_model_everywhere, within=60, interval=0.2)
            old_snapshot = await models.snapshot_version()
            assert (await post_json(http, f"{first.url}/admin/retrain", {}))[0] == 202
            new = await eventually(
                lambda: one_model_everywhere(version_sequence(old)), within=60, interval=0.2
            )

            status, body = await post_json(http, f"{second.url}/admin/rollback", {})
            asked = time.monotonic()
            assert status == 200 and body["rolled_back"] is True

            async def rolled_back_everywhere():
                return True if await served(http, workers) == {body["model_version"]} else None

            await eventually(rolled_back_everywhere, within=SWITCH_LIMIT, interval=0.05)
            switched = time.monotonic() - asked
            assert await models.snapshot_version() == old_snapshot != new

            newcomers = [
                {"user_id": f"seed-a{user}", "item_id": "brand-new", "action": "purchase"}
                for user in range(8)
            ]
            assert (await post_json(http, f"{first.url}/events", {"events": newcomers}))[0] == 202

            async def folded_on_the_old_snapshot():
                current = await models.current_version()
                known = await get_json(http, f"{first.url}/similar/brand-new")
                return current if known[0] == 200 and current != body["model_version"] else None

            current = await eventually(folded_on_the_old_snapshot, within=30, interval=0.2)
            assert await models.snapshot_version() == old_snapshot
            assert f"+{version_sequence(old_snapshot)}." in current  # a delta on it

            answers = [await post_json(http, f"{first.url}/admin/rollback", {})]
            while answers[-1][0] == 200 and len(answers) < KEPT_VERSIONS:
                answers.append(await post_json(http, f"{first.url}/admin/rollback", {}))
            cli = await asyncio.to_thread(run_app, ["rollback"], first_env, 120)
    finally:
        await redis.aclose()

    status, refused = answers[-1]  # each rollback went one snapshot further back, then none
    assert (status, refused["error"]) == (409, "no earlier model is kept to roll back to")
    assert cli.returncode != 0 and "no earlier model is kept" in cli.stderr
    print(f"both workers switched {switched:.2f} s after the rollback")
