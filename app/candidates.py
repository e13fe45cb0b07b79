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


def exact_top_k(
    item_factors: np.ndarray, users: np.ndarray, k: int, excluded: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k positions and scores per user, scoring every item, never an
    ``excluded[user]`` position; padded like :func:`top_k`. Ties go to the lower position.

    Users are scored in blocks that keep the score matrix near 16 MB.
    """
    items = len(item_factors)
    k = min(k, items)
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
        else:
            best = np.broadcast_to(np.arange(items), scored.shape)
        best_scores = np.take_along_axis(scored, best, axis=1)
        order = np.lexsort((best, -best_scores))
        best = np.take_along_axis(best, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        eligible = best_scores > -np.inf
        ids[rows] = np.where(eligible, best, -1)
        scores[rows] = np.where(eligible, best_scores, MISSING_SCORE)
    return ids, scores
