"""Live test-then-learn HR@10: scored against the top 10 last written, over a sliding window."""

from __future__ import annotations

from app.ops.metrics import LIVE_WINDOW, LiveHitRate


def test_an_event_is_a_hit_when_its_item_was_in_the_last_written_top_10():
    live = LiveHitRate()
    live.written("ann", ["a", "b"], None)
    live.test("ann", "b")
    live.test("ann", "z")
    assert live.rate == 0.5


def test_a_user_without_a_written_list_is_not_scored():
    live = LiveHitRate()
    live.test("nobody", "a")
    assert live.rate == 0.0


def test_the_rate_covers_only_the_last_window_of_trials():
    live = LiveHitRate()
    live.written("ann", ["a"], None)
    for _ in range(LIVE_WINDOW):
        live.test("ann", "a")
    for _ in range(LIVE_WINDOW // 4):
        live.test("ann", "z")
    assert live.rate == 0.75


def test_the_least_recently_written_user_is_forgotten_past_the_bound():
    live = LiveHitRate(max_users=2)
    for user in ("ann", "bob", "cy"):
        live.written(user, ["a"], None)
    live.test("ann", "z")  # would be a miss, were ann still remembered
    live.test("cy", "a")
    assert live.rate == 1.0


def test_trials_are_counted_for_the_model_version_that_ranked_the_list_until_taken():
    live = LiveHitRate()
    live.written("ann", ["a"], "1-x")
    live.written("bob", ["a"], "2-y+1.1")
    live.written("cy", ["a"], None)  # a popular list: no model to credit
    for user, item in [("ann", "a"), ("ann", "z"), ("bob", "a"), ("cy", "a")]:
        live.test(user, item)

    assert live.take_by_model() == {"1-x": [2, 1], "2-y+1.1": [1, 1]}
    assert live.take_by_model() == {}
