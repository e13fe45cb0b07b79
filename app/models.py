"""Record schemas: the event on ``user-actions`` and the per-user state kept in the table."""

from __future__ import annotations

import faust

WEIGHT, COUNT, LAST_AT = range(3)
"""Positions in a user's per-item entry ``[summed weight, event count, last event time]``.

A flat list rather than a nested record: decoding nested records costs about 5x more per event,
and the whole state is decoded and re-encoded on every event.
"""


class UserAction(faust.Record, serializer="json", include_metadata=False):
    """One validated user action, as written to ``user-actions`` (timestamp in unix seconds)."""

    user_id: str
    item_id: str
    action: str
    timestamp: float


class UserState(faust.Record, serializer="json", include_metadata=False):
    """A user's accumulated interactions plus the offsets that make re-delivery harmless.

    ``items`` maps item id -> ``[summed weight, event count, last event time]``.
    ``applied_offset`` is the highest ``user-actions`` offset folded into this state. All of a
    user's events live in one partition and arrive in offset order, so an event at or below it
    was already counted (Kafka re-delivers after a crash). ``forwarded_offsets`` does the same
    for re-keyed copies: origin partition -> highest origin offset applied.
    """

    items: dict[str, list[float]]
    event_count: int = 0
    last_event_at: float = 0.0
    applied_offset: int = -1
    forwarded_offsets: dict[str, int] = {}  # noqa: RUF012 - faust copies record defaults

    def has_applied(self, offset: int, origin: tuple[int, int] | None) -> bool:
        """True when this event (or the original it was re-keyed from) is already counted."""
        if offset <= self.applied_offset:
            return True
        if origin is None:
            return False
        origin_partition, origin_offset = origin
        return origin_offset <= self.forwarded_offsets.get(str(origin_partition), -1)

    def with_action(
        self, action: UserAction, weight: float, offset: int, origin: tuple[int, int] | None
    ) -> UserState:
        """A new state with one more event; the receiver is left unchanged."""
        items = dict(self.items)
        previous = items.get(action.item_id)
        if previous is None:
            items[action.item_id] = [weight, 1, action.timestamp]
        else:
            items[action.item_id] = [
                previous[WEIGHT] + weight,
                previous[COUNT] + 1,
                max(previous[LAST_AT], action.timestamp),
            ]
        forwarded = self.forwarded_offsets
        if origin is not None:
            forwarded = {**forwarded, str(origin[0]): origin[1]}
        return UserState(
            items=items,
            event_count=self.event_count + 1,
            last_event_at=max(self.last_event_at, action.timestamp),
            applied_offset=offset,
            forwarded_offsets=forwarded,
        )

    def weights(self) -> dict[str, float]:
        """Item -> summed weight: the user's row of the interaction matrix."""
        return {item_id: entry[WEIGHT] for item_id, entry in self.items.items()}


def empty_state() -> UserState:
    """The state of a user with no events yet."""
    return UserState(items={})
