"""An agent that fails outside the per-message handling stops its worker.

The failure is a real one that Faust raises on the first table write: the user-state changelog
has fewer partitions than ``user-actions`` (what a worker saw when it subscribed before every
broker knew its new changelog). Restarted in place, as Faust's default supervisor does, the
agent would go on after the failed batch and the batch would be skipped until a rebalance; the
worker must exit instead, with a non-zero code and the cause in its log, having committed no
offset past the failed events.
"""

from __future__ import annotations

import asyncio
import subprocess

from aiokafka.admin import NewTopic
from faust.types import TP

from app import kafka_clients
from app.ops.consumer_lag import committed_offsets
from app.settings import Settings
from app.tables import changelog_topic
from harness.worker import running_worker, worker_env

EXIT_WITHIN = 30.0


async def test_a_worker_whose_agent_fails_on_a_table_write_exits_without_committing_past_it(
    tmp_path, http
):
    env = worker_env(tmp_path)
    settings = Settings.from_env(env)
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(changelog_topic(settings), num_partitions=1, replication_factor=1)]
        )
    finally:
        await admin.close()

    with running_worker(env, tmp_path / "worker.log") as process:
        async with http.post(
            f"{process.url}/events", json={"user_id": "u1", "item_id": "i1", "action": "view"}
        ) as response:
            assert response.status == 202
        try:
            code = await asyncio.to_thread(process.process.wait, EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            code = None
        log = process.log_path.read_text(errors="replace")

    assert code is not None, f"the worker kept running after its agent failed:\n{log[-3000:]}"
    assert code != 0
    assert "PartitionsMismatch" in log

    partitions = [TP(settings.events_topic, p) for p in range(settings.partitions)]
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        committed = await committed_offsets(admin, settings.app_id, partitions)
    finally:
        await admin.close()
    assert all(offset in (-1, 0) for offset in committed.values()), committed
