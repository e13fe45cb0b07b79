"""The accumulation rule of weights: positive actions add, a negative one takes the item out
of the user's positives."""

import pytest

from app.actions import summed_weight


@pytest.mark.parametrize(
    ("previous", "weight", "expected"),
    [(0.0, 2.0, 2.0), (2.0, 0.5, 2.5), (-1.0, 2.0, 1.0)],
    ids=["first", "more", "after a dislike"],
)
def test_a_positive_action_adds_its_weight(previous, weight, expected):
    assert summed_weight(previous, weight) == expected


@pytest.mark.parametrize(
    ("previous", "weight", "expected"),
    [(4.0, -2.0, 0.0), (2.0, -2.0, 0.0), (0.5, -1.0, -0.5), (0.0, -1.0, -1.0), (-1.0, -1.0, -2.0)],
    ids=["two purchases, one return", "purchase and return", "view, dislike", "first", "again"],
)
def test_a_negative_action_leaves_no_positive_weight(previous, weight, expected):
    assert summed_weight(previous, weight) == expected
