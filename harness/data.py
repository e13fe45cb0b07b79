"""Histories that give a model something to learn, and the bundled sample's use in tests."""

from __future__ import annotations

import random

from harness import ROOT

SAMPLE_EVENTS = ROOT / "data" / "sample-events.csv"
"""7,431 real purchases (see data/README.md), the events of ``make run``'s feed."""

STREAMING_REPLAY_LIMIT = 400
"""Events of the sample's streaming replay that the pipeline-agreement test sends through a
worker, and that its calibration (the same replay in process, users fitted in reverse order)
simulates: the two must replay the same events."""


def seed_history() -> list[dict]:
    """Two taste groups: users of group a buy a-items, users of group b buy b-items."""
    rng = random.Random(3)
    events = []
    for group in "ab":
        for user in range(20):
            for item in rng.sample(range(10), 6):
                events.append(
                    {
                        "user_id": f"seed-{group}{user}",
                        "item_id": f"{group}{item}",
                        "action": "purchase",
                    }
                )
    return events
