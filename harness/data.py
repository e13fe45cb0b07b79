"""Histories that give a model something to learn, and the bundled sample's use in tests."""

from __future__ import annotations

import random

import numpy as np

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


def random_rows(seed: int, items: int, per_user: int, users: int) -> list[dict[str, float]]:
    """``users`` interaction rows of ``per_user`` distinct items among ``items``, weighted 0.5,
    1 or 2 at random: something for a small ALS fit in a unit test."""
    rng = np.random.default_rng(seed)
    return [
        {
            f"item{j}": float(rng.choice([0.5, 1.0, 2.0]))
            for j in rng.choice(items, per_user, replace=False)
        }
        for _ in range(users)
    ]
