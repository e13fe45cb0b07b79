"""The changelog encoding of a user's state and the per-user item cap."""

from __future__ import annotations

import orjson
import pytest

from app.actions import IMPRESSION
from app.models import MAX_HIDDEN, RECENT_EVENT_IDS, UserAction, UserState, empty_state
from app.state_codec import decode_state, encode_state, event_id_hash

WHEN = 1_700_000_000.0


def act(item_id: str, timestamp: float = WHEN, event_id: str | None = None) -> UserAction:
    return UserAction("u", item_id, "view", timestamp, event_id)


def round_trip(state: UserState) -> UserState:
    return UserState.loads(state.dumps())


def test_every_field_survives_the_encoding():
    state = UserState(
        items={"a": [2.5, 3, 1_700_000_100], "é-ü": [-0.25, 1, 1_600_000_000]},
        event_count=4,
        last_event_at=1_700_000_100.75,
        applied_offset=123_456_789_012,
        forwarded_offsets={"0": 7, "11": 2**40},
        recent_event_ids=[event_id_hash("e-1"), event_id_hash("e-2")],
    )
    assert state.dumps()[0] == 1, "format 1 starts with its format byte"
    assert round_trip(state) == state


def test_an_empty_state_survives_the_encoding():
    assert round_trip(empty_state()) == empty_state()


def test_a_folded_state_equals_its_decoded_copy():
    state = empty_state()
    for offset, item in enumerate(["a", "b", "a", "c"]):
        action = act(item, WHEN + offset + 0.4, event_id=f"e-{offset}")
        state = state.with_action(action, 0.1, offset, (2, 40 + offset), max_items=2)
    assert round_trip(state) == state


def test_an_old_json_record_still_decodes():
    old = orjson.dumps(
        {
            "items": {"a": [1.5, 2, WHEN + 0.5]},
            "event_count": 2,
            "last_event_at": WHEN + 0.5,
            "applied_offset": 9,
            "forwarded_offsets": {"3": 900},
            "recent_event_ids": ["e-1"],
        }
    )
    state = UserState.loads(old)
    assert state.items == {"a": [1.5, 2, int(WHEN)]}
    assert (state.event_count, state.last_event_at, state.applied_offset) == (2, WHEN + 0.5, 9)
    assert state.has_applied(10, (3, 900)) and state.has_applied(10, None, "e-1")
    assert encode_state(decode_state(old)) == state.dumps()


def test_an_old_json_record_without_optional_fields_decodes():
    assert UserState.loads(b'{"items": {}, "event_count": 0}') == empty_state()


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown user state format 4"):
        decode_state(b"\x04" + empty_state().dumps()[1:])


def test_hidden_items_survive_the_encoding_as_format_2_and_others_stay_format_1():
    state = empty_state().with_action(act("a"), 1.0, offset=1, origin=None)
    hiding = state.with_hidden(["x", "é-ü"], hidden=True, offset=1)

    assert hiding.dumps()[0] == 2 and state.dumps()[0] == 1
    assert round_trip(hiding) == hiding
    assert hiding.dumps()[1 : len(state.dumps())] == state.dumps()[1:]  # format 1, then hides


def test_hiding_again_moves_an_item_last_showing_removes_it_and_events_keep_hides():
    state = empty_state().with_hidden(["a", "b", "a"], hidden=True, offset=3)
    assert state.hidden == ["a", "b"] and state.applied_offset == 3
    state = state.with_hidden(["a"], hidden=True, offset=4)
    assert state.hidden == ["b", "a"]
    state = state.with_hidden(["b", "never-hidden"], hidden=False, offset=5)
    assert state.hidden == ["a"]
    assert state.with_action(act("c"), 1.0, offset=6, origin=None).hidden == ["a"]


def test_only_the_latest_hides_are_kept():
    state = empty_state().with_hidden([f"i{n}" for n in range(MAX_HIDDEN + 5)], True, offset=1)
    assert len(state.hidden) == MAX_HIDDEN and state.hidden[0] == "i5"


def test_event_ids_are_remembered_as_hashes_that_deduplicate_after_decoding():
    state = empty_state().with_action(act("a", event_id="e-1"), 1.0, offset=5, origin=None)
    assert state.recent_event_ids == [event_id_hash("e-1")]
    decoded = round_trip(state)
    assert decoded.has_applied(9, None, "e-1")
    assert not decoded.has_applied(9, None, "e-2")


def test_an_event_id_hash_is_64_bits_and_stable():
    assert event_id_hash("e-1") == event_id_hash("e-1") < 2**64
    assert event_id_hash("e-1") != event_id_hash("e-2")


def test_the_cap_drops_the_least_recently_used_items():
    state = empty_state()
    for offset, item in enumerate(["a", "b", "c", "a", "d"]):
        state = state.with_action(act(item, WHEN + offset), 1.0, offset, None, max_items=3)
    assert list(state.items) == ["a", "c", "d"], "b was used last at offset 1"
    assert state.event_count == 5, "dropping items keeps the event count"


def test_the_cap_breaks_time_ties_by_lower_weight_then_item_id():
    state = empty_state()
    for offset, (item, weight) in enumerate([("b", 1.0), ("a", 1.0), ("c", 0.5), ("d", 2.0)]):
        state = state.with_action(act(item), weight, offset, None, max_items=2)
    assert sorted(state.items) == ["b", "d"], "c weighs least, then a sorts before b"


def test_the_cap_gives_the_same_state_whatever_the_arrival_order_of_equal_times():
    events = [("x", 1.0), ("y", 1.0), ("z", 1.0)]
    states = []
    for order in (events, events[::-1]):
        state = empty_state()
        for offset, (item, weight) in enumerate(order):
            state = state.with_action(act(item), weight, offset, None, max_items=2)
        states.append(sorted(state.items.items()))
    assert states[0] == states[1] == [("y", [1.0, 1, int(WHEN)]), ("z", [1.0, 1, int(WHEN)])]


def test_a_state_over_the_cap_shrinks_to_it_on_its_next_event():
    state = UserState(items={f"i{n}": [1.0, 1, int(WHEN) + n] for n in range(10)})
    state = state.with_action(act("i9", WHEN + 20), 1.0, 0, None, max_items=4)
    assert sorted(state.items) == ["i6", "i7", "i8", "i9"]


def test_a_capped_heavy_user_encodes_in_a_size_set_by_the_caps():
    state = empty_state()
    for offset in range(5_000):
        action = act(f"{85_000 + offset % 700}A", WHEN + offset, event_id=f"{offset:036d}")
        state = state.with_action(action, 1.0, offset, (offset % 12, offset), max_items=100)
    assert len(state.items) == 100 and len(state.recent_event_ids) == RECENT_EVENT_IDS
    # header 26 + 12 origins * 10 + 100 ids * 8 + 100 items * (14 + 6 bytes of id)
    assert len(state.dumps()) == 26 + 12 * 10 + 100 * 8 + 100 * 20


def test_impressions_survive_the_encoding_as_format_3():
    state = empty_state().with_hidden(["x"], hidden=True, offset=1)
    showing = state.with_impression(UserAction("u", "é-ü", IMPRESSION, WHEN), 2, None)
    showing = showing.with_impression(UserAction("u", "b", IMPRESSION, WHEN), 3, None)
    showing = showing.with_impression(UserAction("u", "é-ü", IMPRESSION, WHEN), 4, None)

    assert showing.dumps()[0] == 3
    assert round_trip(showing) == showing
    assert round_trip(showing).impressions == {"b": 1, "é-ü": 2}
    assert round_trip(state).impressions == {} and state.dumps()[0] == 2
