"""Stream processing: validate, weight and accumulate each action; refresh touched users.

Table writes happen only here, one event at a time (Faust allows table writes only while an
event is being processed); the ALS work is batched by the timer, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

from faust.types import EventT, StreamT
from redis.exceptions import RedisError

from app.events import InvalidEvent, decode_message
from app.faust_app import app, models, settings, store
from app.models import empty_state
from app.recommender import Recommender
from app.tables import TableStates, user_state
from app.topics import ALL_TOPICS, dead_letters, partition_for, user_actions

log = logging.getLogger(__name__)

ORIGIN_HEADER = "x-recsys-origin"
"""On a re-keyed copy: ``partition:offset`` of the original message in ``user-actions``."""

ERROR_HEADER = "x-recsys-error"

recommender = Recommender(settings, store, models, TableStates())


def _headers(event: EventT) -> Mapping[str, bytes]:
    headers: Any = event.message.headers or {}
    return headers if isinstance(headers, Mapping) else dict(headers)


def _origin(headers: Mapping[str, bytes]) -> tuple[int, int] | None:
    raw = headers.get(ORIGIN_HEADER)
    if raw is None:
        return None
    partition, _, offset = raw.decode().partition(":")
    return int(partition), int(offset)


async def apply_event(event: EventT) -> None:
    """Apply one message of ``user-actions`` to the user's state, exactly once."""
    message = event.message
    try:
        action = decode_message(event.value, settings, now=message.timestamp)
    except InvalidEvent as error:
        log.warning("dead-lettered %s:%s: %s", message.partition, message.offset, error)
        await dead_letters.send(
            key=event.key,
            value=event.value,
            headers=[
                (ERROR_HEADER, str(error).encode()),
                (ORIGIN_HEADER, f"{message.partition}:{message.offset}".encode()),
            ],
        )
        return
    headers = _headers(event)
    origin = _origin(headers)
    key = action.user_id.encode()
    if event.key != key or message.partition != partition_for(key):
        # Produced with a missing or foreign key, or by a client whose partitioner differs
        # (kcat's default): move it where the user's state lives, remembering the original.
        forwarded_from = origin or (message.partition, message.offset)
        await user_actions.send(
            key=key,
            value=event.value,
            headers=[(ORIGIN_HEADER, "{}:{}".format(*forwarded_from).encode())],
        )
        return
    state = user_state.get(key) or empty_state()
    if state.has_applied(message.offset, origin):
        return
    weight = settings.weight(action.action)
    state = state.with_action(action, weight, message.offset, origin)
    user_state[key] = state
    recommender.record(action, weight, state)


@app.task
async def declare_topics() -> None:
    """Create the topics the worker writes to but does not consume (the dead-letter topic)."""
    for topic in ALL_TOPICS:
        await topic.maybe_declare()


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


@app.timer(MODEL_SYNC_INTERVAL)
async def follow_published_model() -> None:
    """Serve the trainer's current model on every worker, within a second of publication."""
    try:
        await recommender.sync_model()
    except (RedisError, OSError) as error:
        log.warning("model check postponed, Redis unavailable: %s", error)


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
