"""``python -m app replay``: rebuild every derived state from the raw ``user-actions`` log.

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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.cli import AppCommand, option
from redis.exceptions import RedisError

from app.consumer_lag import committed_offsets
from app.events import InvalidEvent, parse_timestamp
from app.faust_app import app, models, redis, settings
from app.progress import Progress
from app.tables import user_state

log = logging.getLogger(__name__)

DERIVED_TABLES = (user_state,)
MARKER_TTL_SECONDS = 7 * 24 * 3600
TOPIC_DELETION_TIMEOUT = 60.0
CATCH_UP_CHECK_INTERVAL = 1.0
UNKNOWN_TOPIC_OR_PARTITION = 3
KEPT_MODEL_KEYS = ("sequence",)
"""Model keys a replay keeps: versions keep counting up across replays."""


def marker_key(prefix: str) -> str:
    return f"{prefix}:replay"


def glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def derived_key_patterns(prefix: str) -> list[str]:
    """SCAN patterns of every Redis key derived from ``user-actions``."""
    literal = glob_escape(prefix)
    return [f"{literal}:rec:*", f"{literal}:popular:*", f"{literal}:model:*"]


def is_kept_key(prefix: str, key: str) -> bool:
    return key in {f"{prefix}:model:{name}" for name in KEPT_MODEL_KEYS}


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


def table_folders(data_dir: Path, table_names: Iterable[str]) -> list[Path]:
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


async def delete_derived_keys(prefix: str) -> int:
    deleted = 0
    for pattern in derived_key_patterns(prefix):
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            if is_kept_key(prefix, key.decode(errors="replace")):
                continue
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    return deleted


async def reset(since: float | None, data_dirs: list[Path], say: Callable[[str], None]) -> None:
    """The whole reset; see the module docstring for the steps and their order."""
    bootstrap = settings.bootstrap_servers
    group = app.conf.id
    topic = settings.events_topic
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
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
        changelogs = [table.changelog_topic.get_topic_name() for table in DERIVED_TABLES]
        await delete_topics(admin, changelogs)
        say(f"deleted changelog topics {', '.join(changelogs)}")
    finally:
        await consumer.stop()
        await admin.close()
    for data_dir in data_dirs:
        for folder in table_folders(data_dir, [table.name for table in DERIVED_TABLES]):
            shutil.rmtree(folder)
            say(f"deleted local table folder {folder}")
    deleted = await delete_derived_keys(settings.redis_prefix)
    marker = {
        "id": uuid.uuid4().hex,
        "at": time.time(),
        "starts": {str(p): offset for p, offset in starts.items()},
        "ends": {str(p): offset for p, offset in ends.items()},
    }
    await redis.set(marker_key(settings.redis_prefix), orjson.dumps(marker), ex=MARKER_TTL_SECONDS)
    say(f"deleted {deleted} derived Redis keys under {settings.redis_prefix!r}")


@app.command(
    option(
        "--since",
        default=None,
        help="rebuild from the events logged at or after this time (ISO-8601 or unix seconds); "
        "default: from the beginning of the log",
    ),
    option(
        "--data-dir",
        "data_dirs",
        multiple=True,
        help="a worker data folder whose tables to delete (repeat for several workers); "
        "default: RECSYS_DATA_DIR",
    ),
)
async def replay(self: AppCommand, since: str | None, data_dirs: tuple[str, ...]) -> None:
    """Rebuild tables, model and Redis from the raw user-actions log (workers must be stopped)."""
    try:
        since_seconds = None if since is None else parse_timestamp(since)
    except InvalidEvent as error:
        raise SystemExit(f"--since: {error.problem}") from None
    folders = [Path(folder) for folder in data_dirs] or [Path(settings.data_dir)]
    try:
        await reset(since_seconds, folders, self.say)
    except (ReplayRefused, KafkaError, RedisError, OSError) as error:
        raise SystemExit(f"replay stopped: {error}") from None
    self.say(
        "done: start the workers with the new configuration to re-apply the log; "
        "'python -m app catch-up' follows their progress"
    )


def records_reapplied(
    starts: Mapping[int, int], ends: Mapping[int, int], committed: Mapping[int, int]
) -> int:
    """Records of the replayed range the group has committed, over all partitions."""
    return sum(
        min(max(committed.get(p, start), start), ends[p]) - start for p, start in starts.items()
    )


CATCH_UP_POLL_SECONDS = 1.0


@app.command()
async def catch_up(self: AppCommand) -> None:
    """Follow the workers re-applying the log after a replay: a bar of the records re-applied,
    until every partition has reached where the log ended at the replay."""
    raw = await redis.get(marker_key(settings.redis_prefix))
    if raw is None:
        raise SystemExit(
            f"no replay in the last {MARKER_TTL_SECONDS // 86400} days: nothing to follow"
        )
    marker = orjson.loads(raw)
    starts = {int(p): offset for p, offset in marker["starts"].items()}
    ends = {int(p): offset for p, offset in marker["ends"].items()}
    topic = settings.events_topic
    partitions = [TopicPartition(topic, p) for p in sorted(starts)]
    total = sum(ends[p] - starts[p] for p in starts)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        with Progress().bar("re-applied", total, "record") as bar:
            done = 0
            while True:
                offsets = await committed_offsets(admin, app.conf.id, partitions)
                committed = {tp.partition: offset for tp, offset in offsets.items()}
                reapplied = records_reapplied(starts, ends, committed)
                bar.update(reapplied - done)
                done = reapplied
                if done >= total:
                    break
                await asyncio.sleep(CATCH_UP_POLL_SECONDS)
    finally:
        await admin.close()
    self.say(f"all {total} records re-applied; each worker now asks the trainer for a full fit")


class CatchUpWatch:
    """After a replay, asks for a full fit once this worker has re-applied the log as it stood.

    Committed offsets are the signal: Faust commits an offset only after the changelog holds
    the state up to it, where the trainer (which reads the changelog) finds it. A worker
    restarted while the marker lives asks once more, which costs one extra fit.
    """

    def __init__(self) -> None:
        self.done: set[str] = set()

    async def check(self) -> None:
        raw = await redis.get(marker_key(settings.redis_prefix))
        if raw is None:
            return
        marker = orjson.loads(raw)
        if marker["id"] in self.done:
            return
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.events_topic]
        if not assigned:
            return
        committed = app.monitor.tp_committed_offsets
        for tp in assigned:
            start, end = marker["starts"][str(tp.partition)], marker["ends"][str(tp.partition)]
            if end > start and committed.get(tp, -1) < end:
                return
        self.done.add(marker["id"])
        await models.request_retrain()
        log.info(
            "replay %s re-applied on this worker's partitions: full fit requested", marker["id"]
        )


catch_up_watch = CatchUpWatch()


@app.timer(CATCH_UP_CHECK_INTERVAL)
async def fit_after_replay() -> None:
    try:
        await catch_up_watch.check()
    except (RedisError, OSError) as error:
        log.warning("replay catch-up check postponed, Redis unavailable: %s", error)
