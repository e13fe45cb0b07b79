"""A worker with an API key configured, on the real Kafka: writes and admin endpoints need the
key, public reads stay open, and a refused request writes nothing."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from harness.commands import run_app
from harness.http import eventually, get_json
from harness.kafka import records_logged
from harness.worker import WorkerProcess, running_worker, worker_env

KEY = secrets.token_urlsafe(24)
EVENT = {"user_id": "keyed-user", "item_id": "i1", "action": "click"}


@pytest.fixture(scope="module")
def keyed_worker(tmp_path_factory) -> WorkerProcess:
    folder = tmp_path_factory.mktemp("keyed")
    env = worker_env(folder, RECSYS_API_KEY=KEY, RECSYS_RUN_TRAINER="false")
    with running_worker(env, folder / "worker.log") as process:
        yield process


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/events", EVENT),
        ("/items", {"item_id": "i1"}),
        ("/admin/retrain", {}),
        ("/admin/rollback", {}),
    ],
)
async def test_writes_and_admin_endpoints_without_the_key_get_401_and_write_nothing(
    keyed_worker, http, path, body
):
    before = await records_logged(keyed_worker)
    for headers in ({}, {"X-API-Key": "guess"}, {"Authorization": "Bearer guess"}):
        async with http.post(f"{keyed_worker.url}{path}", json=body, headers=headers) as answer:
            assert answer.status == 401
    assert await records_logged(keyed_worker) == before


async def test_an_event_posted_with_the_key_is_accepted_and_counted(keyed_worker, http):
    headers = {"Authorization": f"Bearer {KEY}"}
    async with http.post(f"{keyed_worker.url}/events", json=EVENT, headers=headers) as answer:
        assert answer.status == 202

    async def counted():
        status, body = await get_json(http, f"{keyed_worker.url}/users/keyed-user")
        return body if status == 200 else None

    assert (await eventually(counted, within=10))["event_count"] == 1


async def test_public_reads_and_health_stay_open_while_admin_reads_need_the_key(keyed_worker, http):
    for path in ("/recommend/anyone", "/popular", "/health"):
        assert (await get_json(http, f"{keyed_worker.url}{path}"))[0] == 200
    async with http.get(f"{keyed_worker.url}/metrics") as answer:
        assert answer.status == 401
    async with http.get(f"{keyed_worker.url}/metrics", headers={"X-API-Key": KEY}) as answer:
        assert answer.status == 200


async def test_feed_sends_the_configured_key_and_its_events_are_accepted(keyed_worker, tmp_path):
    events = tmp_path / "events.csv"
    now = int(time.time())
    events.write_text(f"user_id,item_id,action,timestamp\nfed,i1,view,{now}\nfed,i2,click,{now}\n")

    done = await asyncio.to_thread(
        run_app, ["feed", str(events), "--url", keyed_worker.url], keyed_worker.env, 60
    )

    assert done.returncode == 0, done.stderr
    assert "fed 2 events" in done.stdout + done.stderr
