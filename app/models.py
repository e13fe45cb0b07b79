"""Record schemas: the event on ``user-actions``, the per-user state kept in the table and the
catalogue's item."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import faust

from app.actions import IMPRESSION, summed_weight
from app.state_codec import USER_STATE_CODEC, as_float32, event_id_hash, whole_seconds

RECENT_EVENT_IDS = 100
"""How many of a user's latest client event ids are remembered to recognise a re-sent event."""
MAX_HIDDEN = 1000
"""How many items a user's hides keep (the latest): a hide older than that is forgotten."""
MAX_IMPRESSIONS = 200
"""How many items a user's impression counts keep (the latest shown): older ones are forgotten."""

WEIGHT, COUNT, LAST_AT = range(3)
"""Positions in a user's per-item entry ``[summed weight, event count, last event time]``.

The weight is kept as a float32 value and the time in whole seconds, exactly what the
changelog encoding stores (:mod:`app.state_codec`), so a recovered state equals the live one.

A flat list rather than a nested record: decoding nested records costs about 5x more, and
the whole state is decoded and re-encoded once per user in every batch.
"""


class UserAction(faust.Record, serializer="json", include_metadata=False):
    """One validated user action, as written to ``user-actions`` (timestamp in unix seconds)."""

    user_id: str
    item_id: str
    action: str
    timestamp: float
    event_id: str | None = None
    recommendation_id: str | None = None
    """The id of the served list this action answers (``GET /recommend``), for click-through."""


class UserState(faust.Record, serializer=USER_STATE_CODEC, include_metadata=False):
    """A user's accumulated interactions plus the offsets that make re-delivery harmless.

    ``items`` maps item id -> ``[summed weight, event count, last event time]``, at most
    ``max_items`` of them (the least recent are dropped, see :meth:`with_action`).
    ``applied_offset`` is the highest ``user-actions`` offset folded into this state. All of a
    user's events live in one partition and arrive in offset order, so an event at or below it
    was already counted (Kafka re-delivers after a crash). ``forwarded_offsets`` does the same
    for re-keyed copies: origin partition -> highest origin offset applied.
    ``recent_event_ids`` holds 64-bit hashes (:func:`app.state_codec.event_id_hash`) of the
    latest client event ids, oldest first. ``hidden`` lists the items the user hid (never in
    their lists), oldest hide first, at most :data:`MAX_HIDDEN`. ``impressions`` counts, per
    item, how often it was shown to the user since their last action on it, least recently
    shown first, at most :data:`MAX_IMPRESSIONS` items.
    """

    items: dict[str, list[float]]
    event_count: int = 0
    last_event_at: float = 0.0
    applied_offset: int = -1
    forwarded_offsets: dict[str, int] = {}  # noqa: RUF012 - see __post_init__
    recent_event_ids: list[int] = []  # noqa: RUF012 - see __post_init__
    hidden: list[str] = []  # noqa: RUF012 - see __post_init__
    impressions: dict[str, int] = {}  # noqa: RUF012 - see __post_init__

    def __post_init__(self) -> None:
        """Faust gives every record built without a container field the same default object,
        and a state is changed in place (:meth:`add_action`): each empty one gets its own."""
        if not self.forwarded_offsets:
            self.forwarded_offsets = {}
        if not self.recent_event_ids:
            self.recent_event_ids = []
        if not self.hidden:
            self.hidden = []
        if not self.impressions:
            self.impressions = {}

    def has_applied(
        self, offset: int, origin: tuple[int, int] | None, event_id: str | None = None
    ) -> bool:
        """True when this event (or the original it was re-keyed from) is already counted.

        An event a client sent again with the same ``event_id`` (a retry after a 503) is also
        recognised, as long as it is among the user's last ``RECENT_EVENT_IDS`` ids.
        """
        if offset <= self.applied_offset:
            return True
        if event_id is not None and event_id_hash(event_id) in self.recent_event_ids:
            return True
        if origin is None:
            return False
        origin_partition, origin_offset = origin
        return origin_offset <= self.forwarded_offsets.get(str(origin_partition), -1)

    def with_action(
        self,
        action: UserAction,
        weight: float,
        offset: int,
        origin: tuple[int, int] | None,
        max_items: int | None = None,
    ) -> UserState:
        """A new state with one more event (:meth:`add_action` on a copy); the receiver is left
        unchanged."""
        return self.copy().add_action(action, weight, offset, origin, max_items)

    def add_action(
        self,
        action: UserAction,
        weight: float,
        offset: int,
        origin: tuple[int, int] | None,
        max_items: int | None = None,
    ) -> UserState:
        """Fold one more event into this state in place and return it: for a state its caller
        owns, such as the worker's batch copy of a user, so that a user's tenth event in a
        batch does not copy their items a tenth time.

        The item's weight accumulates by :func:`app.actions.summed_weight`, and the item's
        impressions are forgotten: the user reacted to it. With ``max_items`` set and
        exceeded, the least recently used items are dropped (ties: the lower weight, then the
        smaller id), so the same events always leave the same items.
        """
        items = self.items
        previous = items.get(action.item_id)
        seconds = whole_seconds(action.timestamp)
        if previous is None:
            items[action.item_id] = [as_float32(summed_weight(0.0, weight)), 1, seconds]
        else:
            items[action.item_id] = [
                as_float32(summed_weight(previous[WEIGHT], weight)),
                previous[COUNT] + 1,
                max(previous[LAST_AT], seconds),
            ]
        if max_items is not None and len(items) > max_items:
            for item_id in _least_recent(items, len(items) - max_items):
                del items[item_id]
        self.impressions.pop(action.item_id, None)
        self.event_count += 1
        self.last_event_at = max(self.last_event_at, action.timestamp)
        return self._mark_applied(action, offset, origin)

    def with_impression(
        self, action: UserAction, offset: int, origin: tuple[int, int] | None
    ) -> UserState:
        """A new state with the item shown once more (:meth:`add_impression` on a copy)."""
        return self.copy().add_impression(action, offset, origin)

    def add_impression(
        self, action: UserAction, offset: int, origin: tuple[int, int] | None
    ) -> UserState:
        """Count one more showing of the item (an ``impression``) in place and return this
        state: its count grows and it becomes the latest shown. The user's items and event
        count stay as they are: a showing is not an interaction."""
        impressions = self.impressions
        impressions[action.item_id] = impressions.pop(action.item_id, 0) + 1
        for item_id in list(impressions)[: max(len(impressions) - MAX_IMPRESSIONS, 0)]:
            del impressions[item_id]
        return self._mark_applied(action, offset, origin)

    def with_event(
        self,
        action: UserAction,
        weight: float,
        offset: int,
        origin: tuple[int, int] | None,
        max_items: int | None = None,
    ) -> UserState:
        """:meth:`with_impression` for an ``impression``, else :meth:`with_action`."""
        if action.action == IMPRESSION:
            return self.with_impression(action, offset, origin)
        return self.with_action(action, weight, offset, origin, max_items)

    def copy(self) -> UserState:
        """An equal state that shares no container it changes in place with this one (an
        item's entry is replaced, never changed, so the entries are shared)."""
        return UserState(
            items=dict(self.items),
            event_count=self.event_count,
            last_event_at=self.last_event_at,
            applied_offset=self.applied_offset,
            forwarded_offsets=dict(self.forwarded_offsets),
            recent_event_ids=list(self.recent_event_ids),
            hidden=list(self.hidden),
            impressions=dict(self.impressions),
        )

    def _mark_applied(
        self, action: UserAction, offset: int, origin: tuple[int, int] | None
    ) -> UserState:
        """Mark ``action`` (at ``offset``, re-keyed from ``origin``) applied, in place."""
        self.applied_offset = offset
        if origin is not None:
            self.forwarded_offsets[str(origin[0])] = origin[1]
        if action.event_id is not None:
            event_ids = self.recent_event_ids
            event_ids.append(event_id_hash(action.event_id))
            del event_ids[: max(len(event_ids) - RECENT_EVENT_IDS, 0)]
        return self

    def with_hidden(self, item_ids: Sequence[str], hidden: bool, offset: int) -> UserState:
        """A new state with these items hidden (or shown again), from the message at
        ``offset``. Hiding is idempotent, so a re-delivered hide changes nothing; a hide again
        makes the item the latest hidden."""
        named = set(item_ids)
        kept = [item_id for item_id in self.hidden if item_id not in named]
        if hidden:
            kept = [*kept, *dict.fromkeys(item_ids)][-MAX_HIDDEN:]
        return UserState(
            items=self.items,
            event_count=self.event_count,
            last_event_at=self.last_event_at,
            applied_offset=max(self.applied_offset, offset),
            forwarded_offsets=self.forwarded_offsets,
            recent_event_ids=self.recent_event_ids,
            hidden=kept,
            impressions=self.impressions,
        )

    def demoted(self, limit: int) -> frozenset[str]:
        """Items shown to the user at least ``limit`` times without an action on them since
        (none when ``limit`` is 0): the serving policy puts them after every other candidate."""
        if limit <= 0:
            return frozenset()
        return frozenset(item_id for item_id, shown in self.impressions.items() if shown >= limit)

    def weights(self) -> dict[str, float]:
        """Item -> summed weight: the user's row of the interaction matrix."""
        return {item_id: entry[WEIGHT] for item_id, entry in self.items.items()}


def _least_recent(items: dict[str, list[float]], count: int) -> list[str]:
    """The ``count`` least recently used of ``items`` (ties: the lower weight, then the smaller
    id); at the cap that is one item, found in one pass instead of a sort."""
    return heapq.nsmallest(
        count, items, key=lambda item_id: (items[item_id][LAST_AT], items[item_id][WEIGHT], item_id)
    )


def empty_state() -> UserState:
    """The state of a user with no events yet."""
    return UserState(items={})


@dataclass(frozen=True)
class ItemRecord:
    """One catalogue item, as accepted by ``POST /items`` and stored in Redis."""

    item_id: str
    title: str = ""
    description: str = ""
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    available: bool = True
    hidden_until: float | None = None
    """Unix seconds until which the item is in nobody's list (a sale not yet open, a recall
    under review); it comes back by itself after that."""
