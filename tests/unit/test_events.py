"""Event validation: what POST /events and the Kafka agent accept, and how they say no."""

import json

import pytest

from app.settings import Settings
from app.validation import (
    InvalidEvent,
    decode_hiding,
    decode_message,
    parse_item_ids,
    parse_request,
    parse_session,
)

NOW = 1_700_000_000.0
SETTINGS = Settings()


def event(**fields):
    return {"user_id": "u1", "item_id": "i1", "action": "view", **fields}


def test_a_single_event_without_timestamp_is_stamped_now():
    [action] = parse_request(event(), SETTINGS, NOW)
    assert (action.user_id, action.item_id, action.action, action.timestamp) == (
        "u1",
        "i1",
        "view",
        NOW,
    )


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1_600_000_000, 1_600_000_000.0),
        (1_600_000_000.5, 1_600_000_000.5),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14T22:13:20", 1_700_000_000.0),
        ("1600000000", 1_600_000_000.0),
    ],
)
def test_timestamps_are_unix_seconds_or_iso_8601(timestamp, expected):
    [action] = parse_request(event(timestamp=timestamp), SETTINGS, NOW)
    assert action.timestamp == expected


def test_a_batch_is_parsed_in_order():
    actions = parse_request({"events": [event(item_id="a"), event(item_id="b")]}, SETTINGS, NOW)
    assert [a.item_id for a in actions] == ["a", "b"]


def test_extra_fields_are_ignored():
    [action] = parse_request(event(session="s9"), SETTINGS, NOW)
    assert action.item_id == "i1"


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ({"item_id": "i", "action": "view"}, "user_id", "is required"),
        (event(user_id=7), "user_id", "must be a string, got int"),
        (event(item_id="  "), "item_id", "must not be empty"),
        (event(item_id="x" * 257), "item_id", "is 257 characters long, the maximum is 256"),
        (event(user_id="a\x00b"), "user_id", "control or invalid character U+0000 at 1"),
        (event(action=None), "action", "is required"),
        (event(timestamp=True), "timestamp", "must be unix seconds or an ISO-8601 string"),
        (event(timestamp="yesterday"), "timestamp", "is not ISO-8601 or unix seconds"),
        (event(timestamp=100), "timestamp", "is before 2000-01-01"),
        (event(timestamp=NOW + 2 * 86400), "timestamp", "in the future"),
        ("view", "event", "must be a JSON object, got str"),
    ],
)
def test_an_invalid_event_names_its_field_and_problem(bad, field, problem):
    with pytest.raises(InvalidEvent) as raised:
        parse_request(bad, SETTINGS, NOW)
    assert raised.value.field == field
    assert problem in raised.value.problem


def test_an_invalid_event_in_a_batch_names_its_index():
    with pytest.raises(InvalidEvent) as raised:
        parse_request({"events": [event(), event(), event(action=3)]}, SETTINGS, NOW)
    assert raised.value.as_dict() == {
        "index": 2,
        "field": "action",
        "problem": "must be a string, got int",
    }


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"events": []}, "must hold at least one event"),
        ({"events": {"user_id": "u"}}, "must be a list, got dict"),
        ({"events": [event()] * 1001}, "holds 1001 events, the maximum per request is 1000"),
    ],
)
def test_a_malformed_batch_is_refused_as_a_whole(payload, problem):
    with pytest.raises(InvalidEvent, match=problem):
        parse_request(payload, SETTINGS, NOW)


def test_a_kafka_message_is_judged_like_an_http_event():
    action = decode_message(json.dumps(event(timestamp=NOW - 5)).encode(), SETTINGS, NOW)
    assert (action.user_id, action.timestamp) == ("u1", NOW - 5)
    with pytest.raises(InvalidEvent, match="is not JSON"):
        decode_message(b"{not json", SETTINGS, NOW)
    with pytest.raises(InvalidEvent, match="tombstone"):
        decode_message(None, SETTINGS, NOW)


def test_a_session_holds_bare_item_ids_as_views_and_objects_with_their_action():
    actions = parse_session(
        {"items": ["i1", {"item_id": "i2", "action": "purchase"}, {"item_id": "i3"}]},
        SETTINGS,
        NOW,
    )

    assert [(a.item_id, a.action, a.timestamp) for a in actions] == [
        ("i1", "view", NOW),
        ("i2", "purchase", NOW),
        ("i3", "view", NOW),
    ]


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"item_id": "i1"}, "items", "is required"),
        (["i1"], "items", "is required"),
        ({"items": []}, "items", "must hold at least one item"),
        ({"items": "i1"}, "items", "must be a list, got str"),
        ({"items": ["i"] * 101}, "items", "holds 101 items, the maximum per request is 100"),
        ({"items": ["i1", 7]}, "item_id", "must be a string, got int"),
        ({"items": [{"item_id": "i1", "action": ""}]}, "action", "must not be empty"),
    ],
)
def test_an_invalid_session_names_its_field_and_problem(payload, field, problem):
    with pytest.raises(InvalidEvent) as raised:
        parse_session(payload, SETTINGS, NOW)
    assert raised.value.field == field
    assert problem in raised.value.problem


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"item_id": "i1"}, "items", "is required"),
        ({"items": []}, "items", "must hold at least one item"),
        ({"items": ["i1", {"item_id": "i2"}]}, "item_id", "must be a string, got dict"),
    ],
)
def test_a_bad_list_of_items_to_hide_names_its_field_and_problem(payload, field, problem):
    with pytest.raises(InvalidEvent) as raised:
        parse_item_ids(payload, SETTINGS)
    assert raised.value.field == field
    assert problem in raised.value.problem


def test_a_hide_message_must_name_the_user_it_is_keyed_by():
    value = json.dumps({"user_id": "u1", "item_ids": ["i1", "i2"]}).encode()
    assert decode_hiding(value, "u1", SETTINGS) == ["i1", "i2"]
    with pytest.raises(InvalidEvent, match="must be the user the hide is keyed by"):
        decode_hiding(value, "u2", SETTINGS)
