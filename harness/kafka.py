"""Events sent straight to a worker's topic, as any Kafka client would send them, how many
records its topics hold, and who leads its partitions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from app import kafka_clients
from app.settings import Settings
from harness.services import KAFKA_BOOTSTRAP
from harness.worker import WorkerProcess


async def produce(
    topic: str,
    events: list[dict[str, Any]],
    *,
    keyed: bool = True,
    timestamp_ms: int | None = None,
    chunk: int = 1_000,
    pause: float = 0.0,
) -> None:
    """Send events as JSON, keyed by user (or without a key: the worker re-keys those), a chunk
    at a time, each acknowledged by the broker (acks=all) before the next; ``pause`` seconds
    between chunks spread a stream over time."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(events), chunk):
            pending = [
                await producer.send(
                    topic,
                    json.dumps(event).encode(),
                    key=event["user_id"].encode() if keyed else None,
                    timestamp_ms=timestamp_ms,
                )
                for event in events[start : start + chunk]
            ]
            await asyncio.gather(*pending)
            if pause:
                await asyncio.sleep(pause)
    finally:
        await producer.stop()


async def records_logged(process: WorkerProcess) -> int:
    """How many records a worker's events and dead-letter topics hold: unchanged across a
    request that must write nothing."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in (process.topic, process.dead_letter_topic)
            for partition in range(int(process.env["RECSYS_PARTITIONS"]))
        ]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def partition_leaders(
    env: dict[str, str], topic: str, within: float = 30.0
) -> dict[int, tuple[int, frozenset[int]]]:
    """Each partition of ``topic``, as the brokers of these settings describe it now: its leader's
    broker id (-1 while it has none) and the ids of its in-sync replicas.

    aiokafka's admin client sends the request to a random broker of its last metadata, which
    lists a killed broker until the controller fences it: a refused or timed-out attempt is
    retried (each bounded) for ``within`` seconds, then fails saying so."""
    deadline = time.monotonic() + within
    while True:
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                return await _describe_partitions(env, topic)
        except (KafkaError, TimeoutError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no broker of {Settings.from_env(env).bootstrap_servers} described {topic} "
                    f"within {within} s: {error!r}"
                ) from error
            await asyncio.sleep(0.2)


ATTEMPT_TIMEOUT = 10.0
"""Seconds one admin connection and describe may take (a broker that accepts but never answers
would otherwise hold it for aiokafka's 40 s request timeout)."""


async def _describe_partitions(
    env: dict[str, str], topic: str
) -> dict[int, tuple[int, frozenset[int]]]:
    admin = kafka_clients.admin(Settings.from_env(env))
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {
        partition["partition"]: (partition["leader"], frozenset(partition["isr"]))
        for partition in described["partitions"]
    }
