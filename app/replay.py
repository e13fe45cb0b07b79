"""Replay: rebuild every derived state from the raw ``user-actions`` log.

Use it after changing the action weights, or to rebuild from a point in time. With the workers
stopped, it resets the application in place, the way Kafka Streams' reset tool does:

1. commits the consumer group's start offsets on ``user-actions``: the beginning, or with
   ``--since`` the first record logged at or after that time (Kafka's record timestamp, which
   is the ingestion time for events posted over HTTP);
2. deletes the ``user-state`` changelog topic and the local table folders. Both must go: each
   user's state remembers the last offset it applied and would skip every replayed event, and
   Faust refuses a local table that is ahead of its changelog;
3. deletes the derived Redis keys (lists, popularity, published models), but neither the item
   catalogue nor the model version counter;
4. leaves a marker in Redis, so each worker asks the trainer for a full fit once it has
   re-applied the log as it stood, and the model is fitted on all of the rebuilt state.

The workers started next with the new configuration re-apply the log; reads answer from the
partly rebuilt state meanwhile. The raw log is the source of truth and is never touched, so a
replay can be repeated, and an interrupted one is simply run again.

Resetting in place was chosen over a new table generation (a new app id or Faust ``version``):
a generation number would have to stay in every worker's configuration forever after, and a
worker started with the old one would silently serve the old state.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import faust
import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app import kafka_clients
from app.ops.consumer_lag import committed_offsets
from app.settings import Settings
from app.stores import Stores
from app.tables import USER_STATE, changelog_topic

if TYPE_CHECKING:
    from app.factory import Product

log = logging.getLogger(__name__)

DERIVED_TABLES = (USER_STATE,)
MARKER_TTL_SECONDS = 7 * 24 * 3600
TOPIC_DELETION_TIMEOUT = 60.0
UNKNOWN_TOPIC_OR_PARTITION = 3


def start_offsets(
    beginnings: Mapping[int, int],
    ends: Mapping[int, int],
    found: Mapping[int, int | None] | None,
) -> dict[int, int]:
    """Where each partition's replay starts: its beginning, or the offset found for a time.

    A partition with no record at or after the time starts at its end: nothing to replay there.
    """
    if found is None:
        return dict(beginnings)
    return {p: ends[p] if found.get(p) is None else found[p] for p in beginnings}


def table_folders(app: faust.App, data_dir: Path, table_names: Iterable[str]) -> list[Path]:
    """The local RocksDB folders of these tables under a worker's data folder."""
    tables = data_dir / app.conf.tabledir.relative_to(app.conf.datadir)
    folders: list[Path] = []
    for name in table_names:
        folders += sorted(tables.glob(f"{name}-*.db")) + sorted(tables.glob(f"{name}-backups"))
    return folders


class ReplayRefused(RuntimeError):
    """The reset cannot proceed safely; the message says why and what to do."""


async def group_member_count(admin: AIOKafkaAdminClient, group: str) -> int:
    (response,) = await admin.describe_consumer_groups([group])
    (described,) = response.groups
    return len(described[5])


async def delete_topics(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Delete topics and wait until the broker no longer lists them."""
    response = await admin.delete_topics(names)
    for name, code, *_ in response.topic_error_codes:
        if code not in (0, UNKNOWN_TOPIC_OR_PARTITION):
            raise ReplayRefused(f"could not delete topic {name}: Kafka error code {code}")
    deadline = time.monotonic() + TOPIC_DELETION_TIMEOUT
    while set(names) & set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise ReplayRefused(f"topics {names} still listed {TOPIC_DELETION_TIMEOUT:.0f} s on")
        await asyncio.sleep(0.2)


async def delete_derived_keys(stores: Stores) -> int:
    """Delete every Redis key derived from ``user-actions``; how many were deleted."""
    redis, keys = stores.redis, stores.keys
    deleted = 0
    for pattern in keys.derived_patterns:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            if keys.kept_by_replay(key.decode(errors="replace")):
                continue
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    return deleted


async def reset(
    product: Product, since: float | None, data_dirs: list[Path], say: Callable[[str], None]
) -> None:
    """The whole reset; see the module docstring for the steps and their order."""
    settings, stores = product.settings, product.stores
    group = settings.app_id
    topic = settings.events_topic
    admin = kafka_clients.admin(settings)
    consumer = kafka_clients.consumer(settings, group_id=group, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        members = await group_member_count(admin, group)
        if members:
            raise ReplayRefused(
                f"{members} worker(s) still in consumer group {group!r}: stop them first "
                f"(a killed worker leaves after {settings.session_timeout:g} s)"
            )
        (described,) = await admin.describe_topics([topic])
        partitions = sorted(p["partition"] for p in described["partitions"])
        if not partitions:
            raise ReplayRefused(f"topic {topic!r} does not exist: nothing to replay")
        tps = [TopicPartition(topic, p) for p in partitions]
        beginnings = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        ends = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        found = None
        if since is not None:
            times = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            found = {tp.partition: None if hit is None else hit.offset for tp, hit in times.items()}
        starts = start_offsets(beginnings, ends, found)
        consumer.assign(tps)
        await consumer.commit({TopicPartition(topic, p): offset for p, offset in starts.items()})
        say(
            f"consumer group {group!r} rewound: {sum(ends[p] - starts[p] for p in starts)} "
            f"records to re-apply over {len(starts)} partitions"
        )
        changelogs = [changelog_topic(settings, table) for table in DERIVED_TABLES]
        await delete_topics(admin, changelogs)
        say(f"deleted changelog topics {', '.join(changelogs)}")
    finally:
        await consumer.stop()
        await admin.close()
    for data_dir in data_dirs:
        for folder in table_folders(product.faust, data_dir, DERIVED_TABLES):
            shutil.rmtree(folder)
            say(f"deleted local table folder {folder}")
    deleted = await delete_derived_keys(stores)
    marker = {
        "id": uuid.uuid4().hex,
        "at": time.time(),
        "starts": {str(p): offset for p, offset in starts.items()},
        "ends": {str(p): offset for p, offset in ends.items()},
    }
    await stores.redis.set(stores.keys.replay_marker, orjson.dumps(marker), ex=MARKER_TTL_SECONDS)
    say(f"deleted {deleted} derived Redis keys under {settings.redis_prefix!r}")


def records_reapplied(
    starts: Mapping[int, int], ends: Mapping[int, int], committed: Mapping[int, int]
) -> int:
    """Records of the replayed range the group has committed, over all partitions."""
    return sum(
        min(max(committed.get(p, start), start), ends[p]) - start for p, start in starts.items()
    )


async def follow_reapplied(
    settings: Settings, starts: Mapping[int, int], ends: Mapping[int, int]
) -> AsyncIterator[int]:
    """The records of a replay re-applied so far, asked of the broker each time the caller
    asks again; ends once every partition reached where the log ended at the replay."""
    partitions = [TopicPartition(settings.events_topic, p) for p in sorted(starts)]
    total = sum(ends[p] - starts[p] for p in starts)
    admin = kafka_clients.admin(settings)
    await admin.start()
    try:
        while True:
            offsets = await committed_offsets(admin, settings.app_id, partitions)
            committed = {tp.partition: offset for tp, offset in offsets.items()}
            reapplied = records_reapplied(starts, ends, committed)
            yield reapplied
            if reapplied >= total:
                return
    finally:
        await admin.close()


class CatchUpWatch:
    """After a replay, asks for a full fit once this worker has re-applied the log as it stood.

    Committed offsets are the signal: Faust commits an offset only after the changelog holds
    the state up to it, where the trainer (which reads the changelog) finds it. A worker
    restarted while the marker lives asks once more, which costs one extra fit.
    """

    def __init__(self, settings: Settings, stores: Stores, app: faust.App) -> None:
        self.settings = settings
        self.stores = stores
        self.app = app
        self.done: set[str] = set()

    async def check(self) -> None:
        raw = await self.stores.redis.get(self.stores.keys.replay_marker)
        if raw is None:
            return
        marker = orjson.loads(raw)
        if marker["id"] in self.done:
            return
        topic = self.settings.events_topic
        assigned = [tp for tp in self.app.consumer.assignment() if tp.topic == topic]
        if not assigned:
            return
        committed = self.app.monitor.tp_committed_offsets
        for tp in assigned:
            start, end = marker["starts"][str(tp.partition)], marker["ends"][str(tp.partition)]
            if end > start and committed.get(tp, -1) < end:
                return
        self.done.add(marker["id"])
        await self.stores.models.request_retrain()
        log.info(
            "replay %s re-applied on this worker's partitions: full fit requested", marker["id"]
        )
