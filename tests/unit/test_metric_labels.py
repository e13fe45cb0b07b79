"""Metric labels take only the product's own strings, never a client's."""

from app.ops.metrics import action_label

WEIGHTS = {"view": 0.5, "click": 1.0}


def test_a_configured_action_is_its_own_label():
    assert action_label("click", WEIGHTS) == "click"


def test_an_action_outside_the_configured_weights_is_labelled_other():
    assert action_label("made-up-7", WEIGHTS) == "other"
