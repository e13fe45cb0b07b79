"""Two workers of one deployment on the real Kafka and Redis: they split the partitions, any
worker answers for any user, one trainer publishes one model (and a retrain reaches both
without a restart), and a survivor takes over."""

from __future__ import annotations

import re
import time
from collections import Counter

from redis.asyncio import Redis

from app.stores.keys import RedisKeys
from app.stores.model import ModelStore, version_sequence
from harness.data import seed_history
from harness.http import eventually, get_json, post_json
from harness.services import REDIS_URL, free_port
from harness.worker import running_worker, worker_env

FAILOVER_LIMIT = 45.0  # session timeout 10 s + rebalance + standby promotion, with margin


def expected_counts(events: list[dict]) -> Counter:
    return Counter(event["user_id"] for event in events)


async def all_counted(http, url: str, counts: Counter) -> bool:
    for user_id, count in counts.items():
        status, body = await get_json(http, f"{url}/users/{user_id}")
        if status != 200 or body["event_count"] != count:
            return False
    return True


async def test_two_workers_share_users_one_model_and_survive_a_kill(tmp_path, http):
    for folder in ("w1", "w2"):
        (tmp_path / folder).mkdir()
    first_env = worker_env(tmp_path / "w1")
    second_env = {
        **first_env,
        "RECSYS_WEB_PORT": str(free_port()),
        "RECSYS_DATA_DIR": str(tmp_path / "w2" / "data"),
    }
    events = seed_history()
    with (
        running_worker(first_env, tmp_path / "w1.log") as first,
        running_worker(second_env, tmp_path / "w2.log") as second,
    ):
        assert (await post_json(http, f"{second.url}/events", {"events": events}))[0] == 202
        counts = expected_counts(events)

        async def both_answer_for_everyone():
            everywhere = [await all_counted(http, w.url, counts) for w in (first, second)]
            return True if all(everywhere) else None

        await eventually(both_answer_for_everyone, within=60, interval=0.5)

        async def one_model_everywhere():
            versions = {
                (await get_json(http, f"{w.url}/health"))[1]["model_version"]
                for w in (first, second)
            }
            return versions if len(versions) == 1 and None not in versions else None

        await eventually(one_model_everywhere, within=30, interval=0.5)
        redis = Redis.from_url(REDIS_URL)
        models = ModelStore(redis, RedisKeys(first.redis_prefix))
        handed_out = await models.last_sequence()
        assert (await post_json(http, f"{first.url}/admin/retrain", {}))[0] == 202

        async def both_serve_the_requested_fit():
            fit = await models.fit_progress()
            if fit is None or version_sequence(fit["version"]) <= handed_out:
                return None  # the fit asked for has not started
            versions = await one_model_everywhere()
            newer = versions and all(
                version_sequence(v) >= version_sequence(fit["version"]) for v in versions
            )
            return versions if newer else None

        try:
            await eventually(both_serve_the_requested_fit, within=30, interval=0.5)
        finally:
            await redis.aclose()
        logs = (tmp_path / "w1.log").read_text() + (tmp_path / "w2.log").read_text()
        active = re.findall(r"trainer \S+ active", logs)
        assert len(active) == 1, "one trainer per deployment; the other waits on the lease"

        killed_at = time.monotonic()
        second.kill()
        during = [
            {"user_id": f"failover-{n % 7}", "item_id": f"f{n}", "action": "click"}
            for n in range(70)
        ]
        assert (await post_json(http, f"{first.url}/events", {"events": during}))[0] == 202
        counts += expected_counts(during)

        async def survivor_has_everyone():
            return True if await all_counted(http, first.url, counts) else None

        await eventually(survivor_has_everyone, within=FAILOVER_LIMIT, interval=0.5)
        print(f"failover: survivor served every user in {time.monotonic() - killed_at:.1f} s")
