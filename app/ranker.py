"""ALS and popularity: pure numerics (numpy, scipy, implicit), no Faust and no I/O.

Users are rows of item -> summed action weight. implicit's confidence is ``alpha * weight``
(not ``1 + alpha * weight``), so ``alpha`` is tuned together with the action weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix

Scored = list[tuple[str, float]]

_FILTERED = float(np.finfo(np.float32).min)  # implicit's score for an excluded (seen) item


@dataclass(frozen=True)
class AlsParams:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 1.0
    iterations: int = 15
    random_seed: int = 42
    threads: int = 0  # 0: all cores


@dataclass(frozen=True)
class FactorModel:
    """A fitted model's item factors and item-id index; never mutated once built."""

    version: str
    trained_at: float
    item_ids: tuple[str, ...]
    item_positions: Mapping[str, int]
    als: AlternatingLeastSquares

    @cached_property
    def item_names(self) -> np.ndarray:
        """Item ids as an object array, to map many positions to ids at once."""
        return np.asarray(self.item_ids, dtype=object)

    def rows_matrix(self, rows: Sequence[Mapping[str, float]]) -> csr_matrix:
        """Users' rows as a CSR matrix over this model's items; unknown items are left out."""
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for row in rows:
            for item_id, weight in row.items():
                position = self.item_positions.get(item_id)
                if position is not None and weight != 0.0:
                    indices.append(position)
                    data.append(weight)
            indptr.append(len(indices))
        return csr_matrix(
            (np.asarray(data, dtype=np.float32), indices, indptr),
            shape=(len(rows), len(self.item_ids)),
        )


def fit(
    rows: Sequence[Mapping[str, float]],
    params: AlsParams,
    version: str,
    trained_at: float,
    progress: Callable[[int, float], None] | None = None,
) -> FactorModel:
    """Fit ALS on all users' rows; a fresh model object each time (refits of grown models fail)."""
    item_ids = tuple(sorted({item_id for row in rows for item_id in row}))
    if not item_ids:
        raise ValueError("cannot fit a model without interactions")
    positions = {item_id: position for position, item_id in enumerate(item_ids)}
    als = AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.random_seed,
        num_threads=params.threads,
    )
    model = FactorModel(version, trained_at, item_ids, positions, als)
    matrix = model.rows_matrix(rows)
    callback = None if progress is None else (lambda it, seconds, *_: progress(it, seconds))
    als.fit(matrix, show_progress=False, callback=callback)
    return model


def fold_in(model: FactorModel, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Exact least-squares user vectors for these rows against the fixed item factors."""
    return model.als.recalculate_user(np.arange(len(rows)), model.rows_matrix(rows))


def recommend(model: FactorModel, rows: Sequence[Mapping[str, float]], n: int) -> list[Scored]:
    """Top-n unseen items per row, folding each user in exactly first.

    A row with no item the model knows gets an empty list: its vector would be zero and its
    ranking meaningless, so the caller falls back to popularity.
    """
    if not rows:
        return []
    matrix = model.rows_matrix(rows)
    n = min(n, len(model.item_ids))
    ids, scores = model.als.recommend(
        np.arange(len(rows)),
        matrix,
        N=n,
        filter_already_liked_items=True,
        recalculate_user=True,
    )
    known = np.diff(matrix.indptr) > 0
    valid = (ids >= 0) & (scores > _FILTERED)
    names = model.item_names[np.where(valid, ids, 0)]
    return [
        list(
            zip(names[user][valid[user]].tolist(), scores[user][valid[user]].tolist(), strict=True)
        )
        if known[user]
        else []
        for user in range(len(rows))
    ]


def decayed_log_score(weight: float, timestamp: float, half_life: float) -> float:
    """``log2`` of a weight's decayed value measured against the unix epoch.

    A weight at time t is worth ``weight * 2 ** ((t - now) / half_life)`` at ``now``; storing
    ``log2(weight) + t / half_life`` keeps sums comparable at any ``now`` without overflow.
    """
    return math.log2(weight) + timestamp / half_life


def log_add(a: float, b: float) -> float:
    """``log2(2**a + 2**b)`` without leaving the log domain."""
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log2(1.0 + 2.0 ** (low - high))


def decayed_value(log_score: float, now: float, half_life: float) -> float:
    """The decayed weight at ``now`` of a score from :func:`decayed_log_score`."""
    return 2.0 ** (log_score - now / half_life)


def popular_excluding(ranked: Sequence[tuple[str, float]], seen: Container[str], n: int) -> Scored:
    """The first n popular items the user has not interacted with."""
    return [(item_id, score) for item_id, score in ranked if item_id not in seen][:n]
