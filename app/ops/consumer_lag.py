"""Consumer lag: how many records of the partitions this worker owns are not yet committed.

The figure ``kafka-consumer-groups.sh --describe`` shows, log end offset minus the group's
committed offset, both asked of the broker. Counted from the broker rather than from what the
worker has read, it keeps growing while a worker is stuck, which is when it matters.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.types import TP

from app import kafka_clients
from app.settings import Settings

Partition = TypeVar("Partition")


def records_behind(
    ends: Mapping[Partition, int],
    committed: Mapping[Partition, int],
    beginnings: Mapping[Partition, int],
) -> dict[Partition, int]:
    """Records between the group's committed offset and the log end, per partition.

    A partition the group never committed (offset missing or -1) is read from its beginning,
    as Faust does, so its lag counts from there.
    """
    behind = {}
    for partition, end in ends.items():
        start = committed.get(partition, -1)
        if start < 0:
            start = beginnings[partition]
        behind[partition] = max(0, end - start)
    return behind


async def committed_offsets(
    admin: AIOKafkaAdminClient, group: str, partitions: Sequence[TP]
) -> dict[TP, int]:
    """The group's committed offset of each partition, -1 where it has none."""
    offsets = await admin.list_consumer_group_offsets(
        group, partitions=[TopicPartition(tp.topic, tp.partition) for tp in partitions]
    )
    return {tp: offsets[tp].offset if tp in offsets else -1 for tp in partitions}


class ConsumerLag:
    """Measures the lag of a worker's assigned partitions of some topics of its group (the app
    id), with Kafka clients of its own: the worker's consumer answers offset requests only
    between its fetches, which held each measurement 2.5 s on an idle worker and overlapped its
    timer."""

    def __init__(self, settings: Settings, topics: Collection[str]) -> None:
        self.settings = settings
        self.group = settings.app_id
        self.topics = frozenset(topics)
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def measure(self, assignment: Collection[TP]) -> dict[TopicPartition, int]:
        """The lag of each assigned partition of the topics; empty while none is assigned."""
        assigned = sorted(
            TopicPartition(tp.topic, tp.partition) for tp in assignment if tp.topic in self.topics
        )
        if not assigned:
            return {}
        admin, offsets = await self._started()
        committed = await committed_offsets(admin, self.group, assigned)
        ends = await offsets.end_offsets(assigned)
        never_committed = [tp for tp in assigned if committed[tp] < 0]
        beginnings = await offsets.beginning_offsets(never_committed) if never_committed else {}
        return records_behind(ends, committed, beginnings)

    async def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        """The admin client (committed offsets) and a group-less consumer (log offsets)."""
        if self._admin is None or self._offsets is None:
            admin = kafka_clients.admin(self.settings)
            offsets = kafka_clients.consumer(self.settings)
            try:
                await admin.start()
                await offsets.start()
            except KafkaError:
                await admin.close()
                await offsets.stop()
                raise
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None
