"""Client event ids: a re-sent event (a retry after a 503) is counted once."""

from __future__ import annotations

import pytest

from app.models import RECENT_EVENT_IDS, UserAction, UserState, empty_state
from app.settings import Settings
from app.validation import InvalidEvent, parse_request

NOW = 1_700_000_000.0


def act(event_id: str | None, item_id: str = "a") -> UserAction:
    return UserAction(
        user_id="u", item_id=item_id, action="view", timestamp=100.0, event_id=event_id
    )


def test_an_event_sent_again_with_its_event_id_is_recognised_at_its_new_offset():
    state = empty_state().with_action(act("e-1"), 1.0, offset=5, origin=None)
    assert state.has_applied(9, None, "e-1")
    assert not state.has_applied(9, None, "e-2")
    assert not state.has_applied(9, None, None), "events without ids are never deduplicated"


def test_only_the_latest_event_ids_of_a_user_are_remembered():
    state = empty_state()
    for offset in range(RECENT_EVENT_IDS + 1):
        state = state.with_action(act(f"e-{offset}"), 1.0, offset=offset, origin=None)
    assert len(state.recent_event_ids) == RECENT_EVENT_IDS
    assert not state.has_applied(10_000, None, "e-0")
    assert state.has_applied(10_000, None, f"e-{RECENT_EVENT_IDS}")


def test_event_ids_survive_the_changelog_encoding():
    state = empty_state().with_action(act("e-1"), 1.0, offset=5, origin=None)
    assert UserState.loads(state.dumps()).has_applied(9, None, "e-1")


def test_a_batch_that_repeats_an_event_id_is_refused_naming_the_first_one():
    events = [
        {"user_id": "u", "item_id": "a", "action": "view", "event_id": "e-1"},
        {"user_id": "u", "item_id": "b", "action": "view", "event_id": "e-2"},
        {"user_id": "u", "item_id": "c", "action": "view", "event_id": "e-1"},
    ]
    with pytest.raises(InvalidEvent) as refused:
        parse_request({"events": events}, Settings(), NOW)
    assert refused.value.as_dict() == {
        "index": 2,
        "field": "event_id",
        "problem": "repeats the event_id of event 0",
    }


def test_an_event_id_is_optional_and_checked_like_any_id():
    [plain] = parse_request({"user_id": "u", "item_id": "a", "action": "view"}, Settings(), NOW)
    assert plain.event_id is None
    with pytest.raises(InvalidEvent, match="event_id: must be a string"):
        parse_request(
            {"user_id": "u", "item_id": "a", "action": "view", "event_id": 7}, Settings(), NOW
        )


@pytest.mark.parametrize("timestamp", ["NaN", "inf", "-inf"])
def test_a_timestamp_that_is_not_a_finite_number_is_called_that(timestamp):
    event = {"user_id": "u", "item_id": "a", "action": "view", "timestamp": timestamp}
    with pytest.raises(InvalidEvent, match="timestamp: is not a finite number"):
        parse_request(event, Settings(), NOW)
