"""What an action does to a user's row: the one accumulation rule of weights, which the
worker's state, the streaming evaluation's simulation and the tests' ground truth all use.

Pure: no Faust, no I/O.
"""

from __future__ import annotations

IMPRESSION = "impression"
"""The action that records an item shown to the user: no weight, it only counts showings
(:meth:`app.models.UserState.with_impression`)."""


def summed_weight(previous: float, weight: float) -> float:
    """The item's weight after one more action of ``weight`` on it (``previous`` is 0.0 for a
    first action).

    A positive action adds. A negative one (``return``, ``dislike``) takes the item out of the
    user's positives whatever it summed to before: the result is at most zero, so two purchases
    and one return leave no positive weight behind. ALS reads a negative weight as preference 0
    with confidence alpha x |weight|, and zero as no observation (see docs/ARCHITECTURE.md).
    """
    if weight < 0:
        return min(previous + weight, 0.0)
    return previous + weight
