"""Stream processing: validate, weight and accumulate each action; store catalogue records.

``user-actions`` is consumed in bounded batches (``Stream.take_events``): each user's events of
a batch fold into one state, written once, so a batch costs one table write and one changelog
record per user instead of one per event. Faust acks a batch's events only after its body ran,
and flushes the producer (changelog records, re-keyed copies, dead letters) before it commits
an offset, so a committed offset never passes an event whose records Kafka has not
acknowledged. A batch that fails is never committed, and the worker stops rather than go on
past it (:func:`never_commit`, ``CrashingSupervisor``). The ALS work is batched by the
refresher, off the event loop.
"""

from __future__ import annotations

import logging
import struct
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
from faust.exceptions import ConsumerNotStarted
from faust.streams import _current_event
from faust.types import TP, EventT, StreamT, TableT
from mode import CrashingSupervisor

from app.actions import IMPRESSION
from app.models import UserState, empty_state
from app.ops import metrics
from app.refresher import ListRefresher
from app.settings import Settings
from app.state_codec import decode_state
from app.topics import ERASE_HEADER, HIDE_HEADER, RESTORE_HEADER, Topics, partition_for
from app.validation import InvalidEvent, decode_hiding, decode_message, parse_item

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


@contextmanager
def as_current(event: EventT) -> Iterator[None]:
    """Make ``event`` the current one of this task while the block runs.

    Faust's table reads and writes take the partition of the local store (and of the
    changelog record) from the current event, and one user's events all live in that user's
    partition. While a batch is applied the stream has already taken later events, of any
    partition. Only this task's context variable is set: the stream's own ``current_event``,
    which its background reader fills the batch from, is left alone. The variable is Faust's
    private ``faust.streams._current_event``: faust-streaming is pinned, and
    tests/unit/test_agents.py checks reads, writes and batch contents.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class EventProcessor:
    """Applies messages of ``user-actions`` to the ``user-state`` table, exactly once."""

    def __init__(
        self, settings: Settings, topics: Topics, table: TableT, refresher: ListRefresher
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.table = table
        self.refresher = refresher

    async def apply(self, events: Sequence[EventT]) -> None:
        """Apply a batch of messages in order: dead-letter, re-key or skip some, fold the rest
        into their users' states, then write each touched user's state once (an erased user's
        as a tombstone)."""
        states: dict[bytes, UserState | None] = {}
        last_event: dict[bytes, EventT] = {}
        for event in events:
            with as_current(event):  # the table reads the user in the event's partition
                applied = await self._fold(event, states)
            if applied is not None:
                last_event[applied] = event
        for key, event in last_event.items():
            with as_current(event):
                state = states[key]
                if state is not None:
                    self.table[key] = state
                elif key in self.table:
                    del self.table[key]  # the changelog's tombstone: the trainer drops them too

    def _user_key(self, event: EventT, header: str) -> bytes:
        """The key of a message about one user (an erasure, a hide), which must sit in that
        user's partition, behind their events: one elsewhere is refused."""
        key = event.key
        if key is None or event.message.partition != partition_for(key, self.settings.partitions):
            raise InvalidEvent(header, "must be keyed by the user, in the user's partition")
        return key

    def _erase(self, event: EventT, states: dict[bytes, UserState | None]) -> bytes:
        """An erasure: the user's state goes (events after it in the batch start afresh)."""
        key = self._user_key(event, ERASE_HEADER)
        states[key] = None
        self.refresher.forget(key.decode(errors="replace"))
        metrics.users_erased.inc()
        return key

    def _hide(self, event: EventT, states: dict[bytes, UserState | None], hidden: bool) -> bytes:
        """A hide (or show again): the items join (or leave) the user's hidden items, and the
        user's list is rewritten without them."""
        key = self._user_key(event, HIDE_HEADER)
        user_id = key.decode(errors="replace")
        item_ids = decode_hiding(event.value, user_id, self.settings)
        state = self._state(key, states)
        states[key] = state.with_hidden(item_ids, hidden, event.message.offset)
        self.refresher.touch(user_id, states[key])
        return key

    def _restore(self, event: EventT, states: dict[bytes, UserState | None]) -> bytes:
        """A restored user (``app.backup``): their dumped state replaces what the table holds,
        as of this message's offset."""
        key = self._user_key(event, RESTORE_HEADER)
        try:
            fields = decode_state(event.value or b"")
        except (ValueError, struct.error, UnicodeDecodeError, KeyError) as error:
            raise InvalidEvent("value", f"is not an encoded user state: {error}") from None
        state = UserState(**{**fields, "applied_offset": event.message.offset})
        states[key] = state
        self.refresher.touch(key.decode(errors="replace"), state)
        return key

    def _state(self, key: bytes, states: dict[bytes, UserState | None]) -> UserState:
        """The user's state as this batch has it so far: folded, else a copy of the table's,
        else new. The batch owns it and folds its events into it in place; what the table
        holds (and the changelog may still be encoding) is never changed."""
        if key in states:
            return states[key] or empty_state()
        stored = self.table.get(key)
        return empty_state() if stored is None else stored.copy()

    async def _fold(self, event: EventT, states: dict[bytes, UserState | None]) -> bytes | None:
        """Fold one message into ``states``; the user's key when the state is to be written."""
        message = event.message
        headers = _headers(event)
        try:
            if ERASE_HEADER in headers:
                return self._erase(event, states)
            if RESTORE_HEADER in headers:
                return self._restore(event, states)
            if HIDE_HEADER in headers:
                return self._hide(event, states, hidden=headers[HIDE_HEADER] != b"0")
            action = decode_message(event.value, self.settings, now=message.timestamp)
            origin = _origin(headers)
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
            return None
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
            return None
        state = self._state(key, states)
        if state.has_applied(message.offset, origin, action.event_id):
            # Re-delivered after a crash. The state is written again all the same: the local
            # store may hold it while the changelog never got it (killed before the flush), and
            # only the changelog survives the loss of the data folder.
            states[key] = state
            metrics.duplicates_skipped.inc()
            return key
        metrics.events_processed.labels(
            metrics.action_label(action.action, self.settings.action_weights)
        ).inc()
        if action.action == IMPRESSION:  # a showing: the list is re-ranked, nothing learnt
            states[key] = state.add_impression(action, message.offset, origin)
            self.refresher.touch(action.user_id, states[key])
            return key
        weight = self.settings.weight(action.action)
        states[key] = state.add_action(
            action, weight, message.offset, origin, self.settings.max_items_per_user
        )
        self.refresher.record(action, weight, states[key], message.timestamp)
        return key


def records_waiting(events: Sequence[EventT], highwater: Callable[[TP], int | None]) -> int:
    """How many records Kafka holds after this batch in its partitions: ``highwater`` is the
    consumer's last known next offset of a partition (None before its first fetch)."""
    last = {event.message.tp: event.message.offset for event in events}
    return sum(max((highwater(tp) or 0) - offset - 1, 0) for tp, offset in last.items())


def never_commit(events: Sequence[EventT]) -> None:
    """Keep the offsets of a batch that failed from ever being committed. ``take_events`` acks
    a batch when its body ends, failed or not, and the consumer commits what was acked (on an
    agent's error too), so the batch would be lost. A message already marked acked is passed
    over by that ack: no commit goes past it, and the restarted worker applies it again."""
    for event in events:
        event.message.acked = True


def add_agents(product: Product) -> None:
    """Register the two stream agents on the product's Faust app."""
    app, topics, processor = product.faust, product.topics, product.processor
    catalogue = product.stores.catalogue
    max_id_length = product.settings.max_id_length
    batch_events, batch_wait = product.settings.batch_events, product.settings.batch_wait

    def highwater(tp: TP) -> int | None:
        """The consumer's last known next offset of a partition; None with no consumer
        running (``agent.test_context()`` runs the agents without one)."""
        try:
            return app.consumer.highwater(tp)
        except ConsumerNotStarted:
            return None

    async def process_user_actions(stream: StreamT) -> None:
        async for events in stream.take_events(batch_events, within=batch_wait):
            try:
                await processor.apply(events)
            except Exception:
                never_commit(events)
                raise
            product.refresher.batch_applied(waiting=records_waiting(events, highwater))

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

    # An agent that fails outside the per-message handling (a dead letter) must not be
    # restarted in place, as Faust's default supervisor does: the new actor goes on after the
    # failed batch, a user's later event raises ``applied_offset`` past that batch's events,
    # and a replay would skip them. CrashingSupervisor stops the worker with a non-zero exit
    # instead; restarted by its supervisor, it resumes from the last committed offset.
    for topic, agent in ((topics.user_actions, process_user_actions), (topics.items, store_items)):
        app.agent(
            topic, name=f"{__name__}.{agent.__name__}", supervisor_strategy=CrashingSupervisor
        )(agent)
