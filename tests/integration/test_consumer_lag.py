"""Consumer lag against the real broker, and the lag a worker reports per partition it owns."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.ops.consumer_lag import ConsumerLag
from app.settings import Settings
from harness.http import eventually, lag_by_partition, post_json
from harness.services import KAFKA_BOOTSTRAP
from harness.worker import running_worker, worker_env


async def test_lag_is_measured_against_the_broker():
    topic, group = f"lag-{uuid.uuid4().hex[:10]}", f"lag-group-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, acks="all")
    await producer.start()
    for partition, count in ((0, 5), (1, 3)):
        for number in range(count):
            await producer.send_and_wait(topic, str(number).encode(), partition=partition)
    await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA_BOOTSTRAP, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    lag = ConsumerLag(Settings(kafka_broker=f"kafka://{KAFKA_BOOTSTRAP}", app_id=group), {topic})
    try:
        first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([first, second])
        await consumer.commit({first: 2})
        assert await lag.measure(consumer.assignment()) == {first: 3, second: 3}
        await consumer.commit({second: 3})
        assert await lag.measure(consumer.assignment()) == {first: 3, second: 0}
    finally:
        await lag.close()
        await consumer.stop()


async def test_the_worker_reports_each_partition_it_owns_and_catches_up_to_zero(worker, http):
    events = [
        {"user_id": f"lag-user-{n}", "item_id": f"lag-item-{n % 3}", "action": "view"}
        for n in range(40)
    ]
    assert (await post_json(http, f"{worker.url}/events", {"events": events}))[0] == 202
    every_partition = {str(p) for p in range(int(worker.env["RECSYS_PARTITIONS"]))}

    async def caught_up():
        lag = await lag_by_partition(http, worker.url, worker.topic)
        return lag if set(lag) == every_partition and not any(lag.values()) else None

    await eventually(caught_up, within=20, interval=0.5)


async def test_measuring_never_committed_partitions_leaves_the_lag_timer_on_time(tmp_path):
    """An idle fresh worker: its ``items`` partitions are never committed. The lag was once
    asked of the worker's own consumer, which answered between 1-s fetches, and the 2-s timer
    warned that it overlapped every 4.5 s."""
    env = worker_env(tmp_path, RECSYS_RUN_TRAINER="false")
    with running_worker(env, tmp_path / "worker.log") as idle:
        await asyncio.sleep(12)
        log = idle.log_path.read_text(errors="replace")

    assert "measure_consumer_lag is overlapping" not in log
