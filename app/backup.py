"""Dump a deployment to files and restore it into a fresh one (``python -m app dump DIR``,
``python -m app restore DIR``), so a new Kafka and Redis give the same answers without the
original event log.

A dump holds the published model (the snapshot with its deltas applied, and the snapshot's user
factors when it has them), the catalogue, every user's state as the ``user-state`` changelog has
it, and the popularity of every half-life kept, with a manifest naming each file's size and
SHA-256. Restoring refuses a damaged dump and a target that already has a model or events.

Users come back as restore messages in ``user-actions`` (header ``x-recsys-restore``, the
state's binary encoding as the value), one per user, which the stream agent applies in the
user's partition like an erasure or a hide: the restored deployment's raw log starts with
them, so a replay there rebuilds the users too. The catalogue goes through topic ``items``;
the model and popularity are written to Redis as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app import kafka_clients
from app.popularity import Popularity
from app.settings import Settings
from app.state_codec import decode_state, encode_state
from app.stores import Stores
from app.stores.catalogue import decode_item, encode_item
from app.stores.model import decode_model, encode_model
from app.tables import changelog_topic

FORMAT = 1
MANIFEST = "manifest.json"
MODEL, USER_FACTORS = "model.npz", "user-factors.npz"
CATALOGUE, STATES, POPULARITY = "catalogue.jsonl", "states.jsonl", "popularity.json"

Send = Callable[[str, bytes], Awaitable[None]]
"""Produce one message (key, value) to a topic, acknowledged."""


class BackupError(Exception):
    """A dump cannot be written or restored; the message says why."""


@contextlib.asynccontextmanager
async def topic_partitions(
    settings: Settings, topic: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer outside any group and the topic's partitions (the configured count); no
    partitions when the topic does not exist."""
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = range(settings.partitions) if topic in await consumer.topics() else ()
        yield consumer, [TopicPartition(topic, p) for p in partitions]
    finally:
        await consumer.stop()


async def latest_records(settings: Settings, topic: str) -> dict[bytes, bytes]:
    """Each key's latest value in a compacted topic, read from the beginning to the end offsets
    of the moment (tombstones remove their key); empty when the topic does not exist."""
    latest: dict[bytes, bytes] = {}
    async with topic_partitions(settings, topic) as (consumer, assigned):
        if not assigned:
            return latest
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        pending = {tp for tp in assigned if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if record.value is None:
                        latest.pop(record.key, None)
                    else:
                        latest[record.key] = record.value
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    return latest


async def records_logged(settings: Settings, topic: str) -> int:
    """How many records a topic holds (0 when it does not exist)."""
    async with topic_partitions(settings, topic) as (consumer, partitions):
        return sum((await consumer.end_offsets(partitions)).values()) if partitions else 0


def _empty_folder(folder: Path) -> None:
    """Create ``folder``, or check it is empty: a dump never mixes with other files."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: a dump goes into a folder of its own")


def _write(folder: Path, name: str, data: bytes) -> dict[str, Any]:
    (folder / name).write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _json_lines(rows: list[Any]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


async def dump(settings: Settings, stores: Stores, folder: Path) -> dict[str, Any]:
    """Write the deployment's model, catalogue, user states and popularity to ``folder`` (which
    must be empty or new) with a manifest; returns the manifest."""
    _empty_folder(folder)
    published = await stores.models.sync(None, asyncio.to_thread)
    if published is None:
        raise BackupError("no model is published yet: fit one first (python -m app retrain)")
    files: dict[str, Any] = {}
    blob = await asyncio.to_thread(encode_model, published.model, published.meta["metrics"])
    files[MODEL] = _write(folder, MODEL, blob)
    users = await stores.models.load_user_factors(published.snapshot)
    if users is not None:
        files[USER_FACTORS] = _write(folder, USER_FACTORS, users)
    records = await stores.catalogue.all()
    catalogue = [dataclasses.asdict(record) for record in records]
    files[CATALOGUE] = _write(folder, CATALOGUE, _json_lines(catalogue))
    changelog = await latest_records(settings, changelog_topic(settings))
    states = [
        {"user_id": key.decode(), "state": decode_state(value)}
        for key, value in sorted(changelog.items())
    ]
    files[STATES] = _write(folder, STATES, _json_lines(states))
    popularity = {
        "newest_event_at": await stores.popularity.newest_event_at(),
        "half_lives": {
            repr(half_life): await stores.popularity.all(half_life)
            for half_life in settings.half_lives
        },
    }
    files[POPULARITY] = _write(folder, POPULARITY, orjson.dumps(popularity))
    manifest = {
        "format": FORMAT,
        "created_at": time.time(),
        "source": {"app_id": settings.app_id, "redis_prefix": settings.redis_prefix},
        "model_version": published.version,
        "users": len(states),
        "items": len(catalogue),
        "files": files,
    }
    _write(folder, MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def read_dump(folder: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A dump's manifest and files, each checked against the manifest's size and SHA-256."""
    try:
        manifest = orjson.loads((folder / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise BackupError(f"{folder / MANIFEST}: not a readable manifest: {error}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: dump format {manifest.get('format')!r}, expected {FORMAT}")
    contents = {}
    for name, expected in manifest["files"].items():
        try:
            data = (folder / name).read_bytes()
        except OSError as error:
            raise BackupError(f"{folder / name}: {error}") from None
        if hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise BackupError(f"{folder / name}: damaged, its SHA-256 is not the manifest's")
        contents[name] = data
    return manifest, contents


def restore_message(row: dict[str, Any]) -> tuple[bytes, bytes]:
    """The ``user-actions`` restore message (key, value) of one dumped user."""
    state = {**row["state"], "applied_offset": -1, "forwarded_offsets": {}}
    return row["user_id"].encode(), encode_state(state)


async def restore(
    settings: Settings,
    stores: Stores,
    folder: Path,
    send_user: Send,
    send_item: Send,
) -> dict[str, Any]:
    """Bring the deployment of ``settings`` (which must have no model and no events) to the
    dump's state; returns the manifest. ``send_user`` produces a restore message to
    ``user-actions``, ``send_item`` a record to ``items``."""
    manifest, contents = read_dump(folder)
    if await stores.models.current_version() is not None:
        raise BackupError("the target already has a model: restore into a fresh deployment")
    if await records_logged(settings, settings.events_topic):
        raise BackupError(f"{settings.events_topic} already holds events: restore into a fresh one")
    for line in contents[CATALOGUE].splitlines():
        record = decode_item(line)
        await send_item(record.item_id, encode_item(record))
    for line in contents[STATES].splitlines():
        await send_user(*restore_message(orjson.loads(line)))
    model, meta = await asyncio.to_thread(decode_model, contents[MODEL])
    version = await stores.models.next_version()
    blob = await asyncio.to_thread(
        encode_model, dataclasses.replace(model, version=version), meta["metrics"]
    )
    await stores.models.publish(version, blob, contents.get(USER_FACTORS))
    popularity = orjson.loads(contents[POPULARITY])
    for half_life, ranked in popularity["half_lives"].items():
        totals = Popularity(float(half_life))
        for item_id, log_score in ranked:
            totals.add_log(item_id, log_score)
        totals.newest = popularity["newest_event_at"]
        await stores.popularity.add(totals)
    return {**manifest, "restored_as": version}
