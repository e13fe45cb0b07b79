"""UserState: accumulation of weighted actions and exactly-once application by offset."""

from app.actions import IMPRESSION
from app.models import (
    COUNT,
    LAST_AT,
    MAX_IMPRESSIONS,
    WEIGHT,
    UserAction,
    UserState,
    empty_state,
)


def act(item_id: str, timestamp: float = 100.0) -> UserAction:
    return UserAction(user_id="u", item_id=item_id, action="view", timestamp=timestamp)


def test_weights_of_repeated_actions_add_up_per_item():
    state = empty_state()
    state = state.with_action(act("a", 10.0), 0.5, offset=0, origin=None)
    state = state.with_action(act("a", 30.0), 2.0, offset=1, origin=None)
    state = state.with_action(act("b", 20.0), 1.0, offset=2, origin=None)
    assert state.weights() == {"a": 2.5, "b": 1.0}
    assert state.items["a"][COUNT] == 2 and state.items["a"][LAST_AT] == 30.0
    assert state.event_count == 3 and state.last_event_at == 30.0


def test_with_action_leaves_the_original_state_unchanged():
    state = empty_state().with_action(act("a"), 1.0, offset=0, origin=None)
    state.with_action(act("a"), 1.0, offset=1, origin=None)
    assert state.items["a"][WEIGHT] == 1.0 and state.event_count == 1


def test_add_action_folds_into_the_state_itself():
    state = empty_state()
    added = state.add_action(act("a"), 1.0, offset=3, origin=(1, 7))
    assert added is state and state.weights() == {"a": 1.0}
    assert (state.applied_offset, state.forwarded_offsets) == (3, {"1": 7})


def test_states_built_without_containers_do_not_share_them():
    one, other = empty_state(), UserState.loads(b'{"items": {}, "event_count": 0}')
    one.add_action(UserAction("u", "a", "view", 100.0, "e-1"), 1.0, offset=0, origin=(2, 5))
    one.add_impression(UserAction("u", "b", IMPRESSION, 100.0), offset=1, origin=None)
    one.hidden.append("c")
    assert other == empty_state() and empty_state() == UserState(items={})


def test_an_offset_at_or_below_the_last_applied_one_was_already_counted():
    state = empty_state().with_action(act("a"), 1.0, offset=41, origin=None)
    assert state.has_applied(40, None) and state.has_applied(41, None)
    assert not state.has_applied(42, None)


def test_a_second_copy_of_a_re_keyed_message_is_recognised_by_its_origin():
    state = empty_state().with_action(act("a"), 1.0, offset=5, origin=(3, 900))
    assert state.has_applied(6, (3, 900)), "a duplicate forward lands at a new offset"
    assert not state.has_applied(6, (3, 901))
    assert not state.has_applied(6, (2, 900)), "origins are tracked per source partition"


def test_state_survives_a_round_trip_through_the_changelog_encoding():
    state = empty_state().with_action(act("a"), 1.0, offset=5, origin=(3, 900))
    decoded = UserState.loads(state.dumps())
    assert decoded.weights() == {"a": 1.0}
    assert decoded.has_applied(6, (3, 900)) and decoded.applied_offset == 5


def shown(item_id: str) -> UserAction:
    return UserAction(user_id="u", item_id=item_id, action=IMPRESSION, timestamp=200.0)


def test_an_impression_counts_a_showing_and_is_no_interaction():
    state = empty_state().with_action(act("a"), 1.0, offset=0, origin=None)
    showing = state.with_impression(shown("b"), offset=1, origin=None)
    showing = showing.with_impression(shown("b"), offset=2, origin=None)

    assert showing.impressions == {"b": 2}
    assert (showing.items, showing.event_count, showing.last_event_at) == (
        state.items,
        state.event_count,
        state.last_event_at,
    )
    assert showing.has_applied(2, None) and not showing.has_applied(3, None)


def test_an_action_on_a_shown_item_forgets_its_impressions():
    state = empty_state().with_impression(shown("a"), offset=0, origin=None)
    state = state.with_impression(shown("b"), offset=1, origin=None)

    state = state.with_action(act("a"), 1.0, offset=2, origin=None)

    assert state.impressions == {"b": 1}


def test_items_shown_the_limit_times_are_demoted_and_a_limit_of_0_demotes_nothing():
    state = empty_state()
    for offset, item_id in enumerate(["a", "b", "a", "a"]):
        state = state.with_impression(shown(item_id), offset=offset, origin=None)

    assert state.demoted(3) == {"a"}
    assert state.demoted(1) == {"a", "b"}
    assert state.demoted(0) == set()


def test_impressions_keep_the_latest_shown_items_only():
    state = empty_state()
    for offset in range(MAX_IMPRESSIONS + 1):
        state = state.with_impression(shown(f"i{offset}"), offset=offset, origin=None)
    state = state.with_impression(shown("i1"), offset=MAX_IMPRESSIONS + 1, origin=None)

    assert len(state.impressions) == MAX_IMPRESSIONS
    assert "i0" not in state.impressions
    assert list(state.impressions)[-1] == "i1", "shown again, it is the latest"


def test_a_negative_action_takes_the_item_out_of_the_positives():
    state = empty_state().with_action(act("a"), 2.0, offset=0, origin=None)
    state = state.with_action(act("a"), 2.0, offset=1, origin=None)

    state = state.with_action(act("a"), -1.0, offset=2, origin=None)

    assert state.weights() == {"a": 0.0}
    assert state.items["a"][COUNT] == 3, "the item stays seen"
