"""Stream processing: validate, weight and accumulate each action; store catalogue records.

Table writes happen only here, one event at a time (Faust allows table writes only while an
event is being processed); the ALS work is batched by the refresher, off the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import EventT, StreamT, TableT

from app.models import empty_state
from app.ops import metrics
from app.refresher import ListRefresher
from app.settings import Settings
from app.topics import Topics, partition_for
from app.validation import InvalidEvent, decode_message, parse_item

if TYPE_CHECKING:
    from app.factory import Product

log = logging.getLogger(__name__)

ORIGIN_HEADER = "x-recsys-origin"
"""On a re-keyed copy: ``partition:offset`` of the original message in ``user-actions``."""

ERROR_HEADER = "x-recsys-error"
ITEMS_BATCH = 500
ITEMS_WITHIN = 0.2


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


class EventProcessor:
    """Applies messages of ``user-actions`` to the ``user-state`` table, exactly once."""

    def __init__(
        self, settings: Settings, topics: Topics, table: TableT, refresher: ListRefresher
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.table = table
        self.refresher = refresher

    async def apply(self, event: EventT) -> None:
        """Apply one message: dead-letter it, re-key it, skip it as a re-delivery, or count it."""
        message = event.message
        try:
            action = decode_message(event.value, self.settings, now=message.timestamp)
            origin = _origin(_headers(event))
        except InvalidEvent as error:
            log.warning("dead-lettered %s:%s: %s", message.partition, message.offset, error)
            metrics.dead_lettered.labels(error.field).inc()
            await self.topics.dead_letters.send(
                key=event.key,
                value=event.value,
                headers=[
                    (ERROR_HEADER, str(error).encode()),
                    (ORIGIN_HEADER, f"{message.partition}:{message.offset}".encode()),
                ],
            )
            return
        key = action.user_id.encode()
        if event.key != key or message.partition != partition_for(key, self.settings.partitions):
            # Produced with a missing or foreign key, or by a client whose partitioner differs
            # (kcat's default): move it where the user's state lives, remembering the original.
            forwarded_from = origin or (message.partition, message.offset)
            metrics.rekeyed.inc()
            await self.topics.user_actions.send(
                key=key,
                value=event.value,
                headers=[(ORIGIN_HEADER, "{}:{}".format(*forwarded_from).encode())],
            )
            return
        state = self.table.get(key) or empty_state()
        if state.has_applied(message.offset, origin, action.event_id):
            # Re-delivered after a crash. Write the state again: the local store may hold it
            # while the changelog never got it (killed before the flush), and only the
            # changelog survives the loss of the data folder. Faust commits this offset only
            # after that write.
            self.table[key] = state
            metrics.duplicates_skipped.inc()
            return
        weight = self.settings.weight(action.action)
        state = state.with_action(action, weight, message.offset, origin)
        self.table[key] = state
        metrics.events_processed.labels(action.action).inc()
        self.refresher.record(action, weight, state, message.timestamp)


def add_agents(product: Product) -> None:
    """Register the two stream agents on the product's Faust app."""
    app, topics, processor = product.faust, product.topics, product.processor
    catalogue = product.stores.catalogue
    max_id_length = product.settings.max_id_length

    async def process_user_actions(stream: StreamT) -> None:
        async for event in stream.events():
            await processor.apply(event)

    async def store_items(stream: StreamT) -> None:
        """Catalogue records from ``items`` (via POST /items or any producer) go to Redis."""
        async for batch in stream.take(ITEMS_BATCH, within=ITEMS_WITHIN):
            records = []
            for value in batch:
                try:
                    records.append(parse_item(orjson.loads(value), max_id_length))
                except (orjson.JSONDecodeError, InvalidEvent) as error:
                    log.warning("skipped a malformed catalogue record: %s", error)
            await catalogue.put(records)

    app.agent(topics.user_actions, name=f"{__name__}.process_user_actions")(process_user_actions)
    app.agent(topics.items, name=f"{__name__}.store_items")(store_items)
