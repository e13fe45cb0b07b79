"""Stream processing: validate, weight and accumulate each action; refresh touched users.

Table writes happen only here, one event at a time (Faust allows table writes only while an
event is being processed); the ALS work is batched by the timer, off the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from faust.types import EventT, StreamT
from redis.exceptions import RedisError

from app import metrics
from app.catalogue import parse_item
from app.consumer_lag import ConsumerLag
from app.events import InvalidEvent, decode_message
from app.faust_app import app, catalogue, models, settings, store
from app.models import empty_state
from app.recommender import Recommender
from app.tables import TableStates, user_state
from app.topics import ALL_TOPICS, dead_letters, items, partition_for, user_actions

log = logging.getLogger(__name__)

ORIGIN_HEADER = "x-recsys-origin"
"""On a re-keyed copy: ``partition:offset`` of the original message in ``user-actions``."""

ERROR_HEADER = "x-recsys-error"

recommender = Recommender(settings, store, models, catalogue, TableStates())


def _headers(event: EventT) -> Mapping[str, bytes]:
    headers: Any = event.message.headers or {}
    return headers if isinstance(headers, Mapping) else dict(headers)


def _origin(headers: Mapping[str, bytes]) -> tuple[int, int] | None:
    raw = headers.get(ORIGIN_HEADER)
    if raw is None:
        return None
    partition, _, offset = raw.decode(errors="replace").partition(":")
    if not all(part.isascii() and part.isdigit() for part in (partition, offset)):
        raise InvalidEvent(ORIGIN_HEADER, f"must be partition:offset, got {raw[:40]!r}")
    return int(partition), int(offset)


async def apply_event(event: EventT) -> None:
    """Apply one message of ``user-actions`` to the user's state, exactly once."""
    message = event.message
    try:
        action = decode_message(event.value, settings, now=message.timestamp)
        origin = _origin(_headers(event))
    except InvalidEvent as error:
        log.warning("dead-lettered %s:%s: %s", message.partition, message.offset, error)
        metrics.dead_lettered.labels(error.field).inc()
        await dead_letters.send(
            key=event.key,
            value=event.value,
            headers=[
                (ERROR_HEADER, str(error).encode()),
                (ORIGIN_HEADER, f"{message.partition}:{message.offset}".encode()),
            ],
        )
        return
    key = action.user_id.encode()
    if event.key != key or message.partition != partition_for(key):
        # Produced with a missing or foreign key, or by a client whose partitioner differs
        # (kcat's default): move it where the user's state lives, remembering the original.
        forwarded_from = origin or (message.partition, message.offset)
        metrics.rekeyed.inc()
        await user_actions.send(
            key=key,
            value=event.value,
            headers=[(ORIGIN_HEADER, "{}:{}".format(*forwarded_from).encode())],
        )
        return
    state = user_state.get(key) or empty_state()
    if state.has_applied(message.offset, origin, action.event_id):
        # Re-delivered after a crash. Write the state again: the local store may hold it while
        # the changelog never got it (killed before the flush), and only the changelog survives
        # the loss of the data folder. Faust commits this offset only after that write.
        user_state[key] = state
        metrics.duplicates_skipped.inc()
        return
    weight = settings.weight(action.action)
    state = state.with_action(action, weight, message.offset, origin)
    user_state[key] = state
    metrics.events_processed.labels(action.action).inc()
    recommender.record(action, weight, state, message.timestamp)


@app.task
async def declare_topics() -> None:
    """Create the topics the worker writes to but does not consume (the dead-letter topic)."""
    for topic in ALL_TOPICS:
        await topic.maybe_declare()


@app.agent(items)
async def store_items(stream: StreamT) -> None:
    """Catalogue records from ``items`` (via POST /items or any producer) go to Redis."""
    async for batch in stream.take(500, within=0.2):
        records = []
        for value in batch:
            try:
                records.append(parse_item(orjson.loads(value), settings.max_id_length))
            except (orjson.JSONDecodeError, InvalidEvent) as error:
                log.warning("skipped a malformed catalogue record: %s", error)
        await catalogue.put(records)


@app.agent(user_actions)
async def process_user_actions(stream: StreamT) -> None:
    async for event in stream.events():
        await apply_event(event)


@app.timer(settings.fold_in_interval)
async def refresh_touched_users() -> None:
    try:
        await recommender.tick()
    except (RedisError, OSError) as error:
        log.warning("refresh postponed, Redis unavailable: %s", error)


MODEL_SYNC_INTERVAL = 1.0
TRAINER_RESTART_DELAY = 5.0


class StartupObjects:
    """Takes every object alive once the worker is up (Faust, aiokafka, the state just loaded)
    out of the cyclic garbage collector's walks, once. A full collection over these ~130,000
    objects stopped the event loop for 55-70 ms, the longest wait a read had; afterwards it
    walks only newer objects. Frozen objects are still freed by reference counting."""

    def __init__(self) -> None:
        self.frozen = False

    def freeze(self) -> None:
        if self.frozen:
            return
        gc.freeze()
        self.frozen = True
        # gc.get_freeze_count() walks the frozen list: fine once, too slow for every tick.
        log.info("froze %d start-up objects out of the cyclic collector", gc.get_freeze_count())


startup_objects = StartupObjects()


@app.timer(MODEL_SYNC_INTERVAL)
async def follow_published_model() -> None:
    """Serve the trainer's current model and the current catalogue on every worker, within a
    second of publication."""
    try:
        await recommender.sync_model()
        await recommender.sync_catalogue()
    except (RedisError, OSError) as error:
        log.warning("model check postponed, Redis unavailable: %s", error)
        return
    if settings.gc_freeze:
        startup_objects.freeze()


LAG_CHECK_INTERVAL = 2.0
consumer_lag = ConsumerLag(
    settings.bootstrap_servers, app.conf.id, {settings.events_topic, settings.items_topic}
)


@app.timer(LAG_CHECK_INTERVAL)
async def measure_consumer_lag() -> None:
    try:
        metrics.set_consumer_lag(await consumer_lag.measure(app.consumer))
    except KafkaError as error:
        log.warning("consumer lag not measured, Kafka unavailable: %s", error)


@app.on_before_shutdown.connect
async def close_consumer_lag(_app: Any, **_signal: Any) -> None:
    await consumer_lag.close()


@app.task
async def supervise_trainer() -> None:
    """Run a trainer beside this worker; the Redis lease makes one per deployment active."""
    if not settings.run_trainer:
        return
    while True:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.trainer",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            async for line in process.stdout:
                log.info("trainer: %s", line.decode(errors="replace").rstrip())
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
        log.warning("trainer exited with %s; restarting in %.0f s", code, TRAINER_RESTART_DELAY)
        await asyncio.sleep(TRAINER_RESTART_DELAY)
