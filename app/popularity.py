"""How popularity accumulates: the one rule the worker, the Redis recovery and the simulation use.

An item's popularity for one half-life is the sum of its positive action weights, each decayed
from its event time: a weight ``w`` at time ``t`` is worth ``w * 2 ** ((t - now) / half_life)``
at ``now``. Scores are kept as ``log2`` of that sum measured against the unix epoch
(:func:`app.ranker.decayed_log_score`), so they never overflow and compare at any ``now``.
Redis holds the running totals; its Lua script (``app.stores.popularity``) is the server-side
twin of :meth:`Popularity.add_log`. Pure numerics: no Faust, no I/O.

The ranking does not depend on ``now``; the weights shown do. They are read at stream time
(:func:`read_time`): the newest event time seen, so a replayed history trends as it did when it
happened, with weights near 1 rather than decayed to nothing against today's date.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from app import ranker


class Trending(NamedTuple):
    """The most popular items (log2 scores, best first) and the time their weights are read at."""

    items: ranker.Scored
    as_of: float


def read_time(clock: str, newest_event_at: float | None, now: float) -> float:
    """When decayed weights are read: at the newest event time seen (``stream``), or at ``now``
    (``wall``, and while no event has been seen)."""
    if clock == "stream" and newest_event_at is not None:
        return newest_event_at
    return now


def log_increment(weight: float, timestamp: float, half_life: float) -> float | None:
    """What one event adds to its item's score, in the log domain; None when it adds nothing.

    Only positive weights count: a return does not make an item less popular.
    """
    if weight <= 0:
        return None
    return ranker.decayed_log_score(weight, timestamp, half_life)


class Popularity:
    """Items' decayed popularity for one half-life, as (item id -> log2 score).

    Used for a worker's not-yet-flushed increments and for the simulation's running totals;
    :meth:`top` ranks like Redis ``ZREVRANGE`` (equal scores in reverse id order).
    """

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self._positions: dict[str, int] = {}
        self._names: list[str] = []
        self._scores = np.empty(64, dtype=np.float64)
        self.newest: float | None = None
        """The newest event time counted (stream time)."""

    def __len__(self) -> int:
        return len(self._names)

    def __bool__(self) -> bool:
        return bool(self._names)

    def add(self, item_id: str, weight: float, timestamp: float) -> None:
        """Count one event of this item."""
        self.newest = timestamp if self.newest is None else max(self.newest, timestamp)
        increment = log_increment(weight, timestamp, self.half_life)
        if increment is not None:
            self.add_log(item_id, increment)

    def add_log(self, item_id: str, log_score: float) -> None:
        """Add a score already in the log domain (an increment, or another total)."""
        position = self._positions.get(item_id)
        if position is not None:
            current = float(self._scores[position])
            self._scores[position] = ranker.log_add(current, log_score)
            return
        position = len(self._names)
        if position == len(self._scores):
            self._scores = np.concatenate([self._scores, np.empty_like(self._scores)])
        self._scores[position] = log_score
        self._positions[item_id] = position
        self._names.append(item_id)

    def merge(self, other: Popularity) -> None:
        """Add every score of another accumulator of the same half-life."""
        if other.half_life != self.half_life:
            raise ValueError(f"half-lives differ: {self.half_life} and {other.half_life}")
        for item_id, log_score in other.items():
            self.add_log(item_id, log_score)
        if other.newest is not None:
            self.newest = other.newest if self.newest is None else max(self.newest, other.newest)

    def items(self) -> Iterator[tuple[str, float]]:
        """(item id, log2 score) in the order items were first counted."""
        return zip(self._names, self._scores[: len(self._names)].tolist(), strict=True)

    def top(self, n: int) -> ranker.Scored:
        """The n highest scores, best first; ties in reverse id order, as Redis ranks them."""
        scores = self._scores[: len(self._names)]
        if n <= 0 or not len(scores):
            return []
        if n < len(scores):
            threshold = np.partition(scores, len(scores) - n)[len(scores) - n]
            candidates = np.flatnonzero(scores >= threshold).tolist()
        else:
            candidates = range(len(scores))
        ranked = sorted(candidates, key=lambda p: (scores[p], self._names[p]), reverse=True)
        return [(self._names[p], float(scores[p])) for p in ranked[:n]]

    def trending(self, n: int, clock: str, now: float) -> Trending:
        """The n most popular items, read at this accumulator's stream time or at ``now``."""
        return Trending(self.top(n), read_time(clock, self.newest, now))


def accumulators(half_lives: Iterable[float]) -> dict[float, Popularity]:
    """One empty accumulator per half-life."""
    return {half_life: Popularity(half_life) for half_life in half_lives}
