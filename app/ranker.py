"""ALS and popularity: pure numerics (numpy, scipy, implicit), no Faust and no I/O.

Users are rows of item -> summed action weight. implicit's confidence is ``alpha * weight``
(not ``1 + alpha * weight``), so ``alpha`` is tuned together with the action weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Container, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix

from app.candidates import CandidateIndex, exact_top_k, top_k

Scored = list[tuple[str, float]]


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
    """A fitted model's item factors and item-id index; never mutated once built.

    ``user_gram`` is X^T X of the fitted user factors: with it, an item first seen after the fit
    can be solved exactly like one item-side ALS step (see :func:`fold_in_new_items`).
    """

    version: str
    trained_at: float
    item_ids: tuple[str, ...]
    item_positions: Mapping[str, int]
    als: AlternatingLeastSquares
    user_gram: np.ndarray
    params: AlsParams
    candidates: CandidateIndex | None = None

    @property
    def item_factors(self) -> np.ndarray:
        return self.als.item_factors

    @cached_property
    def unit_item_factors(self) -> np.ndarray:
        """Item factors scaled to unit length (zero rows stay zero), for cosine similarity."""
        return unit_rows(self.item_factors)

    @cached_property
    def item_names(self) -> np.ndarray:
        """Item ids as an object array, to map many positions to ids at once."""
        return np.asarray(self.item_ids, dtype=object)

    def rows_matrix(self, rows: Sequence[Mapping[str, float]]) -> csr_matrix:
        """Users' rows as a CSR matrix over this model's items; unknown items are left out."""
        return _rows_matrix(rows, self.item_positions, len(self.item_ids))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (zero rows stay zero): cosine becomes a dot product."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


@dataclass(frozen=True)
class UserFactors:
    """The user vectors of one full fit, unit length, to find users of like taste
    (:func:`similar_users`); they live in the space of the snapshot fitted with them, which
    new-item deltas extend without moving."""

    snapshot: str
    user_ids: tuple[str, ...]
    positions: Mapping[str, int]
    unit: np.ndarray
    candidates: CandidateIndex | None = None


def user_factors(
    snapshot: str, user_ids: Sequence[str], factors: np.ndarray, min_users: int
) -> UserFactors:
    """Searchable user vectors, with an HNSW index from ``min_users`` users on (slow for many
    users: build it off the event loop)."""
    if len(user_ids) != factors.shape[0]:
        raise ValueError(f"{len(user_ids)} user ids for {factors.shape[0]} factor rows")
    unit = unit_rows(factors)
    candidates = CandidateIndex.build(unit) if len(user_ids) >= min_users else None
    positions = {user_id: position for position, user_id in enumerate(user_ids)}
    return UserFactors(snapshot, tuple(user_ids), positions, unit, candidates)


def similar_users(
    model: FactorModel, users: UserFactors, user_id: str, row: Mapping[str, float], n: int
) -> Scored:
    """The n users whose fitted vectors are closest by cosine to ``user_id``'s, solved now
    from ``row`` (so their latest events count), the user left out. Empty when the model
    knows none of their items."""
    vector = fold_in(model, [row])[0]
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        return []
    query = (vector / norm).astype(np.float32)[None, :]
    own = [users.positions[user_id]] if user_id in users.positions else []
    excluded = [np.asarray(own, dtype=np.int64)]
    n = min(n, len(users.user_ids) - len(own))
    if n <= 0:
        return []
    if users.candidates is None:
        ids, scores = exact_top_k(users.unit, query, n, excluded)
    else:
        ids, scores = top_k(users.candidates, users.unit, query, n, excluded)
    return [
        (users.user_ids[position], float(score))
        for position, score in zip(ids[0].tolist(), scores[0].tolist(), strict=True)
        if position >= 0
    ]


def _rows_matrix(
    rows: Sequence[Mapping[str, float]], item_positions: Mapping[str, int], items: int
) -> csr_matrix:
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for row in rows:
        for item_id, weight in row.items():
            position = item_positions.get(item_id)
            if position is not None and weight != 0.0:
                indices.append(position)
                data.append(weight)
        indptr.append(len(indices))
    return csr_matrix(
        (np.asarray(data, dtype=np.float32), indices, indptr), shape=(len(rows), items)
    )


def interaction_matrix(
    rows: Sequence[Mapping[str, float]],
) -> tuple[tuple[str, ...], csr_matrix]:
    """What :func:`fit` trains on: the rows' items sorted by id, and the rows as a CSR matrix
    over them (zero weights left out)."""
    item_ids = tuple(sorted({item_id for row in rows for item_id in row}))
    positions = {item_id: position for position, item_id in enumerate(item_ids)}
    return item_ids, _rows_matrix(rows, positions, len(item_ids))


def als_model(params: AlsParams) -> AlternatingLeastSquares:
    """An unfitted implicit model with these parameters."""
    return AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.random_seed,
        num_threads=params.threads,
    )


def model_from_factors(
    version: str,
    trained_at: float,
    item_ids: Sequence[str],
    item_factors: np.ndarray,
    user_gram: np.ndarray,
    params: AlsParams,
) -> FactorModel:
    """A servable model from published factors: enough to fold users in and rank items."""
    if len(item_ids) != item_factors.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids for {item_factors.shape[0]} factor rows")
    als = als_model(params)
    als.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    als.user_factors = np.zeros((0, item_factors.shape[1]), dtype=np.float32)
    positions = {item_id: position for position, item_id in enumerate(item_ids)}
    return FactorModel(version, trained_at, tuple(item_ids), positions, als, user_gram, params)


def fit(
    rows: Sequence[Mapping[str, float]],
    params: AlsParams,
    version: str,
    trained_at: float,
    progress: Callable[[int, float], None] | None = None,
) -> FactorModel:
    """Fit ALS on all users' rows; a fresh model object each time (refits of grown models fail)."""
    item_ids, matrix = interaction_matrix(rows)
    model, _ = fit_matrix(item_ids, matrix, params, version, trained_at, progress)
    return model


def fit_matrix(
    item_ids: Sequence[str],
    matrix: csr_matrix,
    params: AlsParams,
    version: str,
    trained_at: float,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[FactorModel, np.ndarray]:
    """Fit ALS on a ready users x items CSR matrix whose column j is ``item_ids[j]``; the
    model and the user factors (float32, row i for matrix row i).

    :func:`fit` builds it with :func:`interaction_matrix`; the trainer builds the same matrix
    from its arrays (``app.interactions``). Item ids sorted keep models comparable, but nothing
    depends on the order: consumers look items up by ``item_positions``. The user order only
    changes ALS's random start. The model carries only the users' Gram matrix; their factors
    are returned beside it, for :func:`user_factors`.
    """
    if not len(item_ids):
        raise ValueError("cannot fit a model without interactions")
    if matrix.shape[1] != len(item_ids):
        raise ValueError(f"{len(item_ids)} item ids for {matrix.shape[1]} matrix columns")
    als = als_model(params)
    callback = None if progress is None else (lambda it, seconds, *_: progress(it, seconds))
    als.fit(matrix, show_progress=False, callback=callback)
    users = np.asarray(als.user_factors, dtype=np.float64)
    model = model_from_factors(
        version, trained_at, tuple(item_ids), als.item_factors, users.T @ users, params
    )
    return model, np.asarray(als.user_factors, dtype=np.float32)


def fold_in(model: FactorModel, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Exact least-squares user vectors for these rows against the fixed item factors."""
    return model.als.recalculate_user(np.arange(len(rows)), model.rows_matrix(rows))


def recommend(
    model: FactorModel,
    rows: Sequence[Mapping[str, float]],
    n: int,
    exclude: Collection[str] = (),
    vectors: np.ndarray | None = None,
) -> list[Scored]:
    """Top-n unseen items per row, folding each user in exactly first; ``exclude`` (e.g.
    unavailable items) is never ranked. Given ``vectors`` (a row each), users are ranked by
    those instead of being folded in: the rows then only say what is seen.

    Every item of a row counts as seen, also one whose weights summed to zero (bought, then
    returned). A row whose vector comes out zero gets an empty list, as its ranking would be
    meaningless (every item scores 0), so the caller falls back to popularity: a row with no
    item the model knows, or only items folded in with no signal (:func:`solve_new_items`).
    """
    if not rows:
        return []
    positions = model.item_positions
    excluded = [positions[item_id] for item_id in exclude if item_id in positions]
    unrankable = [
        np.fromiter(
            itertools.chain((positions[i] for i in row if i in positions), excluded), np.int64
        )
        for row in rows
    ]
    users = (
        model.als.recalculate_user(np.arange(len(rows)), model.rows_matrix(rows))
        if vectors is None
        else vectors
    )
    rankable = np.flatnonzero(users.any(axis=1))
    n = min(n, len(model.item_ids))
    seen = [unrankable[user] for user in rankable]
    if model.candidates is None:
        ids, scores = exact_top_k(model.item_factors, users[rankable], n, seen)
    else:
        ids, scores = top_k(model.candidates, model.item_factors, users[rankable], n, seen)
    listed = (ids >= 0).sum(axis=1).tolist()  # found items come first, padding last
    names = model.item_names[np.maximum(ids, 0)].tolist()
    values = scores.tolist()
    lists: list[Scored] = [[] for _ in rows]
    for found, (user, count) in enumerate(zip(rankable.tolist(), listed, strict=True)):
        lists[user] = list(zip(names[found][:count], values[found][:count], strict=True))
    return lists


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


def fold_in_new_items(
    model: FactorModel,
    rows: Sequence[Mapping[str, float]],
    version: str,
    trained_at: float,
) -> FactorModel:
    """The model with the items of ``rows`` it does not know yet appended, each solved exactly
    (:func:`solve_new_items`, :func:`with_items`)."""
    item_ids, factors = solve_new_items(model, rows)
    if not item_ids:
        return model
    return with_items(model, item_ids, factors, version, trained_at)


def solve_new_items(
    model: FactorModel, rows: Sequence[Mapping[str, float]]
) -> tuple[tuple[str, ...], np.ndarray]:
    """The items of ``rows`` the model does not know yet (sorted) and their factors.

    Each user of ``rows`` is first folded in against the known items; each new item i then
    gets the item-side ALS solution against the fitted users' Gram matrix G:
    ``y_i = (G + reg I + sum_u (c_ui - 1) x_u x_u^T)^-1 sum_u c_ui p_ui x_u``, c = alpha * |w|.
    Users who touched only new items carry no signal (a zero vector) and are skipped.
    """
    new_ids = sorted({item for row in rows for item in row if item not in model.item_positions})
    factors = model.params.factors
    solved = np.zeros((len(new_ids), factors), dtype=np.float32)
    if not new_ids:
        return (), solved
    users = fold_in(model, rows)
    base = model.user_gram + model.params.regularization * np.eye(factors)
    for position, item_id in enumerate(new_ids):
        a = base.copy()
        b = np.zeros(factors)
        for user, row in zip(users, rows, strict=True):
            weight = row.get(item_id, 0.0)
            if weight == 0.0 or not user.any():
                continue
            x = user.astype(np.float64)
            confidence = model.params.alpha * abs(weight)
            a += (confidence - 1.0) * np.outer(x, x)
            if weight > 0:
                b += confidence * x
        solved[position] = np.linalg.solve(a, b)
    return tuple(new_ids), solved


def with_items(
    model: FactorModel,
    item_ids: Sequence[str],
    factors: np.ndarray,
    version: str,
    trained_at: float,
) -> FactorModel:
    """The model plus these items: known ids get their factor rows replaced, unknown ones are
    appended in the given order. The trainer's fold and a worker applying the published delta
    both build the next model here, so the two always agree.

    A candidate index, if the model has one, gets appended rows added instead of being rebuilt
    (the older model keeps searching it; its searches drop the positions it does not have); a
    replaced row means a rebuild.
    """
    if len(item_ids) != factors.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids for {factors.shape[0]} factor rows")
    positions = dict(model.item_positions)
    appended = [item_id for item_id in dict.fromkeys(item_ids) if item_id not in positions]
    first = len(positions)
    positions.update((item_id, first + i) for i, item_id in enumerate(appended))
    matrix = np.empty((len(positions), model.item_factors.shape[1]), dtype=np.float32)
    matrix[: len(model.item_ids)] = model.item_factors
    matrix[[positions[item_id] for item_id in item_ids]] = factors
    als = als_model(model.params)
    als.item_factors = matrix
    als.user_factors = np.zeros((0, matrix.shape[1]), dtype=np.float32)
    extended = FactorModel(
        version,
        trained_at,
        model.item_ids + tuple(appended),
        positions,
        als,
        model.user_gram,
        model.params,
    )
    if model.candidates is None:
        return extended
    candidates = _extended_index(extended, model)
    if candidates is None:
        candidates = CandidateIndex.build(extended.item_factors)
    return replace(extended, candidates=candidates)


def with_candidate_index(
    model: FactorModel, min_items: int, previous: FactorModel | None = None
) -> FactorModel:
    """The model with a candidate index when it has at least ``min_items`` items.

    Slow for a large catalogue (seconds at 100k items): call it off the event loop. When the
    model only appends items to ``previous`` (same leading ids and factors, as a model from
    :func:`with_items` appending on the publishing side), ``previous``'s index is extended.
    """
    if len(model.item_ids) < min_items or model.candidates is not None:
        return model
    candidates = None if previous is None else _extended_index(model, previous)
    if candidates is None:
        candidates = CandidateIndex.build(model.item_factors)
    return replace(model, candidates=candidates)


def _extended_index(model: FactorModel, previous: FactorModel) -> CandidateIndex | None:
    """``previous``'s index with ``model``'s further items appended, if ``model`` extends it."""
    known = len(previous.item_ids)
    if (
        previous.candidates is None
        or len(previous.candidates) != known
        or model.item_ids[:known] != previous.item_ids
        or not np.array_equal(model.item_factors[:known], previous.item_factors)
    ):
        return None
    previous.candidates.add(model.item_factors[known:], known)
    return previous.candidates


def similar_items(model: FactorModel, item_id: str, n: int) -> Scored:
    """The n items closest to ``item_id`` by cosine of their factors (the item excluded)."""
    position = model.item_positions[item_id]
    unit = model.unit_item_factors
    scores = unit @ unit[position]
    scores[position] = -np.inf
    n = min(n, len(scores) - 1)
    top = np.argpartition(-scores, n - 1)[:n] if n > 0 else np.array([], dtype=int)
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(model.item_ids[i], float(scores[i])) for i in top]
