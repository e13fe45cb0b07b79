"""Top-k candidate search over item factors: an HNSW index (hnswlib) for large catalogues.

Pure numerics, no I/O. ALS scores are inner products, so this is maximum inner-product search:
the index is hnswlib's ``space="ip"`` graph over the raw factors (no augmentation, so items
appended later need no renormalisation). Scores returned are the exact dot products.

Exclusions (seen and unavailable items) are applied after the search: the index is asked for
``k`` plus the largest exclusion count, the excluded ids are dropped, and a user left with fewer
than ``k`` survivors is ranked exactly (:func:`exact_top_k`) instead, and so is every user
when that request would reach past half the index. An index is shared by a
model and the models extended from it (:meth:`CandidateIndex.add`), so a search drops positions
at or past the caller's item count.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

import hnswlib
import numpy as np
import scipy.sparse
from implicit.cpu.topk import topk

MISSING_SCORE = float(np.finfo(np.float32).min)
"""Score of an empty slot (id -1)."""


class CandidateIndex:
    """An HNSW graph over item factor rows 0..len-1; items are only ever appended."""

    def __init__(self, index: hnswlib.Index, ef: int) -> None:
        self._index = index
        self._ef = ef
        self._lock = threading.Lock()  # hnswlib's resize is not safe beside searches

    @classmethod
    def build(
        cls, item_factors: np.ndarray, m: int = 16, ef_construction: int = 100, ef: int = 64
    ) -> CandidateIndex:
        """Index every row on one thread (a worker's solver thread); seconds at 100k items."""
        items, dim = item_factors.shape
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=max(items, 1), M=m, ef_construction=ef_construction)
        index.set_num_threads(1)
        candidates = cls(index, ef)
        candidates.add(item_factors, start=0)
        return candidates

    def __len__(self) -> int:
        return self._index.get_current_count()

    def add(self, item_factors: np.ndarray, start: int) -> None:
        """Append rows as positions ``start``, ``start + 1``, ...; ``start`` must be len."""
        if start != len(self):
            raise ValueError(f"items append at position {len(self)}, not {start}")
        if not len(item_factors):
            return
        with self._lock:
            needed = start + len(item_factors)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            labels = np.arange(start, needed)
            self._index.add_items(np.asarray(item_factors, dtype=np.float32), labels)

    def search(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k positions per user (closest first) and hnswlib's distances."""
        k = min(k, len(self))
        with self._lock:
            self._index.set_ef(max(self._ef, k))
            labels, distances = self._index.knn_query(users, k=k, num_threads=1)
        return labels.astype(np.int64), distances


def top_k(
    index: CandidateIndex,
    item_factors: np.ndarray,
    users: np.ndarray,
    k: int,
    excluded: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item positions and exact scores per user, never an ``excluded[user]`` position.

    Rows are padded with id -1 and :data:`MISSING_SCORE` when fewer than k items are eligible.
    A user the index leaves with fewer than k eligible candidates is ranked exactly.
    """
    items = len(item_factors)
    ids = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), MISSING_SCORE, dtype=np.float32)
    if not len(users) or not k:
        return ids, scores
    extra = max((len(seen) for seen in excluded), default=0)
    wanted = k + extra + max(0, len(index) - items)
    found = np.empty((len(users), 0), dtype=np.int64)
    if wanted <= len(index) // 2:  # past that, scoring every item costs less
        with contextlib.suppress(RuntimeError):  # hnswlib reached too few: rank exactly
            found, _ = index.search(users, wanted)
    for user, seen in enumerate(excluded):
        candidates = found[user] if found.shape[1] else found[0:0].ravel()
        candidates = candidates[candidates < items]
        candidates = candidates[~np.isin(candidates, seen)]
        eligible = items - len(np.unique(seen))
        if len(candidates) < min(k, eligible):
            exact, _ = exact_top_k(item_factors, users[user : user + 1], k, [seen])
            candidates = exact[0][exact[0] >= 0]
        candidates = candidates[:k]
        exact = item_factors[candidates] @ users[user]
        order = np.argsort(-exact, kind="stable")
        ids[user, : len(candidates)] = candidates[order]
        scores[user, : len(candidates)] = exact[order]
    return ids, scores


BLOCKED_MIN_ITEMS = 5_000
"""From this many items on, :func:`exact_top_k` keeps each user's best with implicit's blocked
heap instead of numpy's ``argpartition`` over a whole score row: 0.6 against 1.6 ms per user
at 100k items, and about even at 5k (docs/CANDIDATE_SEARCH.md)."""


def exact_top_k(
    item_factors: np.ndarray, users: np.ndarray, k: int, excluded: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k positions and scores per user, scoring every item, never an
    ``excluded[user]`` position; padded like :func:`top_k`. Ties go to the lower position.

    Large catalogues go through :func:`_heap_top_k`; a user whose k-th and next scores tie
    there, and every user of a small catalogue, goes through :func:`_partition_top_k`.
    """
    items = len(item_factors)
    k = min(k, items)
    if items < BLOCKED_MIN_ITEMS or not len(users) or not 0 < k < items:
        return _partition_top_k(item_factors, users, k, excluded)
    ids, scores, tied = _heap_top_k(item_factors, users, k, excluded)
    if tied.any():
        rows = np.flatnonzero(tied)
        ids[rows], scores[rows] = _partition_top_k(
            item_factors, users[rows], k, [excluded[row] for row in rows]
        )
    return ids, scores


def _heap_top_k(
    item_factors: np.ndarray, users: np.ndarray, k: int, excluded: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`exact_top_k` by ``implicit.cpu.topk`` (one thread), plus which users it cannot
    answer: those whose k-th best ties with the next, where the heap's pick is not ours."""
    counts = [len(seen) for seen in excluded]
    filtered = scipy.sparse.csr_matrix(
        (
            np.ones(sum(counts), dtype=np.float32),
            np.concatenate([np.asarray(seen, dtype=np.int64) for seen in excluded] or [[]]),
            np.concatenate(([0], np.cumsum(counts))),
        ),
        shape=(len(users), len(item_factors)),
    )
    found, found_scores = topk(
        item_factors, users, k + 1, filter_query_items=filtered, num_threads=1
    )
    tied = (found_scores[:, k - 1] == found_scores[:, k]) & (found_scores[:, k] > MISSING_SCORE)
    found, found_scores = found[:, :k].astype(np.int64), found_scores[:, :k]
    order = np.lexsort((found, -found_scores))
    found = np.take_along_axis(found, order, axis=1)
    found_scores = np.take_along_axis(found_scores, order, axis=1)
    eligible = found_scores > MISSING_SCORE
    return (
        np.where(eligible, found, -1),
        np.where(eligible, found_scores, MISSING_SCORE).astype(np.float32),
        tied,
    )


def _partition_top_k(
    item_factors: np.ndarray, users: np.ndarray, k: int, excluded: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_top_k` by numpy: a matrix product per block of users, kept near 16 MB,
    then ``argpartition`` of each score row."""
    items = len(item_factors)
    ids = np.full((len(users), k), -1, dtype=np.int64)
    scores = np.full((len(users), k), MISSING_SCORE, dtype=np.float32)
    if not len(users) or not k:
        return ids, scores
    block = max(1, (1 << 22) // items)
    for start in range(0, len(users), block):
        rows = slice(start, start + block)
        scored = np.asarray(users[rows] @ item_factors.T, dtype=np.float32)
        for row, seen in enumerate(excluded[rows]):
            scored[row, seen] = -np.inf
        if k < items:
            best = np.argpartition(-scored, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(scored, best, axis=1)
            _lowest_at_the_cut(scored, best, best_scores)
        else:
            best = np.broadcast_to(np.arange(items), scored.shape)
            best_scores = scored
        order = np.lexsort((best, -best_scores))
        best = np.take_along_axis(best, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        eligible = best_scores > -np.inf
        ids[rows] = np.where(eligible, best, -1)
        scores[rows] = np.where(eligible, best_scores, MISSING_SCORE)
    return ids, scores


def _lowest_at_the_cut(scored: np.ndarray, best: np.ndarray, best_scores: np.ndarray) -> None:
    """Where items tie with a row's k-th best beyond what ``argpartition`` kept, which of them
    it kept is arbitrary: keep the lowest positions instead (in place)."""
    cut = best_scores.min(axis=1, keepdims=True)
    short = (scored == cut).sum(axis=1) > (best_scores == cut).sum(axis=1)
    for row in np.flatnonzero(short & (cut[:, 0] > -np.inf)):
        above = best[row][best_scores[row] > cut[row]]
        tied = np.flatnonzero(scored[row] == cut[row])[: best.shape[1] - len(above)]
        best[row] = np.concatenate([above, tied])
        best_scores[row] = scored[row, best[row]]
