"""Ranking metrics of one user's list against the items they went on to use: what the offline
evaluation, the streaming evaluation and the trainer's check of a new model all score with.

Each takes a ranking (best first; items distinct; only its first k are looked at), a non-empty
collection of relevant items and a cut-off k >= 1, and returns a value in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

METRICS = ("HR@10", "Recall@20", "NDCG@10", "NDCG@20")


def _check(relevant: Collection[str], k: int) -> None:
    if k < 1:
        raise ValueError(f"the cut-off k must be at least 1, got {k}")
    if not relevant:
        raise ValueError("a user without relevant items cannot be scored")


def _hits(ranked: Sequence[str], relevant: Collection[str], k: int) -> list[bool]:
    return [item in relevant for item in ranked[:k]]


def hit_rate_at(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 when any of the first k ranked items is relevant, else 0.0."""
    _check(relevant, k)
    return 1.0 if any(_hits(ranked, relevant, k)) else 0.0


def recall_at(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant items among the first k, divided by ``min(k, len(relevant))``.

    The denominator is capped at k so that a perfect top-k list scores 1.0 even when the user
    has more than k relevant items.
    """
    _check(relevant, k)
    return sum(_hits(ranked, relevant, k)) / min(k, len(relevant))


def ndcg_at(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-relevance NDCG@k: ``DCG / ideal DCG``.

    ``DCG = sum(1 / log2(rank + 1))`` over relevant items at ranks 1..k; the ideal DCG puts
    ``min(k, len(relevant))`` relevant items at ranks 1, 2, ...
    """
    _check(relevant, k)
    dcg = sum(
        1.0 / math.log2(rank + 1) for rank, hit in enumerate(_hits(ranked, relevant, k), 1) if hit
    )
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def user_metrics(ranked: Sequence[str], relevant: Collection[str]) -> dict[str, float]:
    """All of :data:`METRICS` for one user."""
    return {
        "HR@10": hit_rate_at(ranked, relevant, 10),
        "Recall@20": recall_at(ranked, relevant, 20),
        "NDCG@10": ndcg_at(ranked, relevant, 10),
        "NDCG@20": ndcg_at(ranked, relevant, 20),
    }
