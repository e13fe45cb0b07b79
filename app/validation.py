"""Validation of what comes in: events (``POST /events`` and messages read from Kafka) and
catalogue items (``POST /items`` and records read from the ``items`` topic).

Both paths of each accept the same JSON object, so an event produced straight to
``user-actions`` by any Kafka client is judged exactly like one that came over HTTP.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from app.models import ItemRecord, UserAction
from app.settings import Settings

EARLIEST_TIMESTAMP = 946_684_800.0  # 2000-01-01T00:00:00Z: older stamps are taken as mistakes
MAX_ACTION_LENGTH = 64
MAX_EVENT_ID_LENGTH = 64
MAX_RECOMMENDATION_ID_LENGTH = 128
T = TypeVar("T")
_FORBIDDEN_CATEGORIES = {"Cc", "Cs", "Cn"}  # control, surrogate, unassigned code points


class InvalidEvent(ValueError):
    """An event that cannot be accepted; names the event index (in a batch), field and problem."""

    def __init__(self, field: str, problem: str, index: int | None = None) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem
        self.index = index

    def at(self, index: int) -> InvalidEvent:
        """The same problem, located at an index of a batch."""
        return InvalidEvent(self.field, self.problem, index)

    def as_dict(self) -> dict[str, Any]:
        located = {} if self.index is None else {"index": self.index}
        return {**located, "field": self.field, "problem": self.problem}

    def __str__(self) -> str:
        where = "" if self.index is None else f"event {self.index}: "
        return f"{where}{self.field}: {self.problem}"


def identifier(value: Any, field: str, max_length: int) -> str:
    """A user, item or action id: a non-empty string of printable characters, bounded length."""
    if value is None:
        raise InvalidEvent(field, "is required")
    if not isinstance(value, str):
        raise InvalidEvent(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidEvent(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidEvent(field, f"is {len(value)} characters long, the maximum is {max_length}")
    for position, char in enumerate(value):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidEvent(
                field, f"has a control or invalid character U+{ord(char):04X} at {position}"
            )
    return value


def parse_timestamp(value: Any) -> float:
    """Unix seconds (a number or a numeric string) or an ISO-8601 string, as unix seconds.

    An ISO-8601 time without an offset is taken as UTC. No range check: a non-finite or very old
    value is returned as is. Raises :class:`InvalidEvent` (field ``timestamp``) for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidEvent(
            "timestamp", "must be unix seconds or an ISO-8601 string, got " + type(value).__name__
        )
    if not isinstance(value, str):
        return float(value)
    try:
        return float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(
                "timestamp", f"is not ISO-8601 or unix seconds: {value[:40]!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _timestamp(value: Any, now: float, max_future_skew: float) -> float:
    if value is None:
        return now
    seconds = parse_timestamp(value)
    if not math.isfinite(seconds):
        raise InvalidEvent("timestamp", "is not a finite number")
    if seconds < EARLIEST_TIMESTAMP:
        raise InvalidEvent("timestamp", "is before 2000-01-01")
    if seconds > now + max_future_skew:
        raise InvalidEvent("timestamp", f"is more than {max_future_skew:.0f} s in the future")
    return seconds


def parse_event(event: Any, settings: Settings, now: float) -> UserAction:
    """Validate one event object; raise :class:`InvalidEvent` naming the first bad field."""
    if not isinstance(event, Mapping):
        raise InvalidEvent("event", f"must be a JSON object, got {type(event).__name__}")
    return UserAction(
        user_id=identifier(event.get("user_id"), "user_id", settings.max_id_length),
        item_id=identifier(event.get("item_id"), "item_id", settings.max_id_length),
        action=identifier(event.get("action"), "action", MAX_ACTION_LENGTH),
        timestamp=_timestamp(event.get("timestamp"), now, settings.max_future_skew),
        event_id=(
            None
            if event.get("event_id") is None
            else identifier(event["event_id"], "event_id", MAX_EVENT_ID_LENGTH)
        ),
        recommendation_id=(
            None
            if event.get("recommendation_id") is None
            else identifier(
                event["recommendation_id"], "recommendation_id", MAX_RECOMMENDATION_ID_LENGTH
            )
        ),
    )


def request_entries(payload: Any, noun: str, maximum: int) -> list[Any]:
    """The entries of a request body that is one entry or ``{"<noun>s": [...]}``, checking
    that the list holds between 1 and ``maximum`` of them."""
    field = f"{noun}s"
    if not (isinstance(payload, Mapping) and field in payload):
        return [payload]
    entries = payload[field]
    if not isinstance(entries, list):
        raise InvalidEvent(field, f"must be a list, got {type(entries).__name__}")
    if not entries:
        raise InvalidEvent(field, f"must hold at least one {noun}")
    if len(entries) > maximum:
        raise InvalidEvent(
            field, f"holds {len(entries)} {field}, the maximum per request is {maximum}"
        )
    return entries


def required_entries(payload: Any, noun: str, maximum: int, shape: str) -> list[Any]:
    """The entries of a body that must be ``{"<noun>s": [...]}`` (``shape`` says of what),
    checked like :func:`request_entries`'s."""
    if not isinstance(payload, Mapping) or f"{noun}s" not in payload:
        raise InvalidEvent(f"{noun}s", f"is required: a list of {shape}")
    return request_entries(payload, noun, maximum)


def each_entry(entries: list[Any], parse: Callable[[Any], T]) -> list[T]:
    """Every entry parsed, all or nothing: the first refusal is located at its index."""
    parsed = []
    for index, entry in enumerate(entries):
        try:
            parsed.append(parse(entry))
        except InvalidEvent as error:
            raise error.at(index) from None
    return parsed


def parse_request(payload: Any, settings: Settings, now: float) -> list[UserAction]:
    """Validate a request body: one event, or ``{"events": [...]}``; all or nothing."""
    events = request_entries(payload, "event", settings.max_events_per_request)
    parsed = []
    first_index_of: dict[str, int] = {}
    for index, event in enumerate(events):
        try:
            action = parse_event(event, settings, now)
        except InvalidEvent as error:
            raise error.at(index) from None
        if action.event_id is not None:
            first = first_index_of.setdefault(action.event_id, index)
            if first != index:
                raise InvalidEvent("event_id", f"repeats the event_id of event {first}", index)
        parsed.append(action)
    return parsed


def parse_item_ids(payload: Any, settings: Settings) -> list[str]:
    """``{"items": [item ids]}``: at most ``max_items_per_request`` of them, each validated."""
    entries = required_entries(payload, "item", settings.max_items_per_request, "item ids")
    return each_entry(entries, lambda entry: identifier(entry, "item_id", settings.max_id_length))


def decode_hiding(value: bytes | None, user_id: str, settings: Settings) -> list[str]:
    """The item ids of a hide message of ``user-actions`` (``{"user_id", "item_ids"}``), which
    must name the user it is keyed by."""
    try:
        payload = orjson.loads(value or b"")
    except orjson.JSONDecodeError as error:
        raise InvalidEvent("value", f"is not JSON: {error}") from None
    if not isinstance(payload, Mapping) or payload.get("user_id") != user_id:
        raise InvalidEvent("user_id", "must be the user the hide is keyed by")
    return parse_item_ids({"items": payload.get("item_ids")}, settings)


SESSION_USER = ""
"""The user id of an anonymous visitor's actions (``POST /recommend``): never stored or sent."""
SESSION_ACTION = "view"
"""The action of a session entry that names only its item."""


def parse_session(payload: Any, settings: Settings, now: float) -> list[UserAction]:
    """An anonymous visitor's recent actions, ``{"items": [...]}`` of item ids or
    ``{"item_id": ..., "action": ...}`` objects (action optional: a view), oldest first.

    At most ``max_items_per_user`` of them, the items a user's state keeps, so a session is
    read exactly like a user who did the same."""
    shape = "item ids or {item_id, action}"
    entries = required_entries(payload, "item", settings.max_items_per_user, shape)

    def session_action(entry: Any) -> UserAction:
        named = entry if isinstance(entry, Mapping) else {"item_id": entry}
        return UserAction(
            user_id=SESSION_USER,
            item_id=identifier(named.get("item_id"), "item_id", settings.max_id_length),
            action=identifier(named.get("action", SESSION_ACTION), "action", MAX_ACTION_LENGTH),
            timestamp=now,
        )

    return each_entry(entries, session_action)


def decode_message(value: bytes | None, settings: Settings, now: float) -> UserAction:
    """Validate the value of a Kafka message, as produced by any client."""
    if value is None:
        raise InvalidEvent("value", "is empty (a tombstone)")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent("value", f"is not JSON: {error}") from None
    return parse_event(payload, settings, now)


# -- catalogue items ------------------------------------------------------------------------

MAX_TEXT_LENGTH = 2000
MAX_LABEL_LENGTH = 64
MAX_LABELS = 50
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}


def _text(value: Any, field: str) -> str:
    """Free text: optional, bounded, and free of control characters other than tab and newlines."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(field, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidEvent(
            field, f"is {len(value)} characters long, the maximum is {MAX_TEXT_LENGTH}"
        )
    for position, char in enumerate(value):
        if unicodedata.category(char) in {"Cc", "Cs"} and char not in _ALLOWED_CONTROLS:
            raise InvalidEvent(
                field, f"has a control or invalid character U+{ord(char):04X} at {position}"
            )
    return value


def _labels(value: Any, field: str) -> tuple[str, ...]:
    """Categories or tags: a list of short labels, duplicates dropped, first occurrence kept."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidEvent(field, f"must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_LABELS:
        raise InvalidEvent(field, f"holds {len(value)} entries, the maximum is {MAX_LABELS}")
    labels = (
        identifier(label, f"{field}[{position}]", MAX_LABEL_LENGTH)
        for position, label in enumerate(value)
    )
    return tuple(dict.fromkeys(labels))


def parse_item(item: Any, max_id_length: int) -> ItemRecord:
    """Validate one item object; raise :class:`InvalidEvent` naming the first bad field."""
    if not isinstance(item, Mapping):
        raise InvalidEvent("item", f"must be a JSON object, got {type(item).__name__}")
    available = item.get("available", True)
    if not isinstance(available, bool):
        raise InvalidEvent("available", f"must be true or false, got {type(available).__name__}")
    hidden_until = item.get("hidden_until")
    if hidden_until is not None:
        try:
            hidden_until = parse_timestamp(hidden_until)
        except InvalidEvent as error:
            raise InvalidEvent("hidden_until", error.problem) from None
        if not math.isfinite(hidden_until):
            raise InvalidEvent("hidden_until", "is not a finite number")
    return ItemRecord(
        item_id=identifier(item.get("item_id"), "item_id", max_id_length),
        title=_text(item.get("title"), "title"),
        description=_text(item.get("description"), "description"),
        categories=_labels(item.get("categories"), "categories"),
        tags=_labels(item.get("tags"), "tags"),
        available=available,
        hidden_until=hidden_until,
    )


def parse_items(payload: Any, max_items: int, max_id_length: int) -> list[ItemRecord]:
    """Validate a ``POST /items`` body: one item, or ``{"items": [...]}``; all or nothing.

    Errors are located like :func:`parse_request`'s: the item's index (0 for a single
    item), the field and the problem. Unknown fields are ignored.
    """
    items = request_entries(payload, "item", max_items)
    return each_entry(items, lambda item: parse_item(item, max_id_length))
