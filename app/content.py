"""Content-based recommendations from the item catalogue: pure numerics, no Faust and no I/O.

Items carry a title, tags and categories, so an item no user has touched yet, or a user the ALS
model does not know, can still be matched by content. :class:`ContentIndex` is TF-IDF over
those fields with cosine similarity; :func:`blend` mixes its list with the popular one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
from scipy.sparse import csr_matrix

from app.models import ItemRecord

_TOKEN = re.compile(r"[^\W_]+")  # runs of Unicode letters and digits
_CATEGORY_TOKEN = "category:"


def tokenize(text: str) -> list[str]:
    """Lowercase, split on anything but Unicode letters and digits, drop 1-character tokens.

    ``"Men's T-Shirt"`` gives ``["men", "shirt"]``. There is no stemming and no stop-word list:
    idf already discounts words every item shares. Scripts written without spaces (Chinese,
    Japanese) become one token per run of characters.
    """
    return [token for token in _TOKEN.findall(text.lower()) if len(token) >= 2]


def item_tokens(record: ItemRecord) -> list[str]:
    """The terms an item is indexed by: words of its title and tags, and each whole category.

    A category is one term (``category:home & garden``), so it matches only the same category
    and never a word of a title. The description is left out: it is long, often boilerplate
    shared across a brand or a feed, and would outweigh the curated title and tags.
    """
    tokens = tokenize(record.title)
    for tag in record.tags:
        tokens += tokenize(tag)
    tokens += [_CATEGORY_TOKEN + category.lower() for category in record.categories]
    return tokens


class ContentIndex:
    """TF-IDF rows of a catalogue, L2-normalised, so a dot product is a cosine similarity.

    A term's weight in an item is ``count * idf`` with the smooth idf
    ``ln((1 + N) / (1 + df)) + 1`` (N items, df of them holding the term); each row is then
    scaled to unit length. Items are sorted by id, which is also the order of tied scores. Built
    once from a snapshot of the catalogue and never mutated, so threads can share it.
    """

    def __init__(self, records: Iterable[ItemRecord]) -> None:
        latest = {record.item_id: record for record in records}  # a later record replaces one
        ordered = [latest[item_id] for item_id in sorted(latest)]
        self.item_ids: tuple[str, ...] = tuple(record.item_id for record in ordered)
        self.item_positions: Mapping[str, int] = {
            item_id: position for position, item_id in enumerate(self.item_ids)
        }
        self.available: np.ndarray = np.array([r.available for r in ordered], dtype=bool)
        counts = [Counter(item_tokens(record)) for record in ordered]
        self.vocabulary: Mapping[str, int] = {
            term: column
            for column, term in enumerate(sorted({term for count in counts for term in count}))
        }
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for count in counts:
            indices += [self.vocabulary[term] for term in count]
            data += count.values()
            indptr.append(len(indices))
        shape = (len(ordered), len(self.vocabulary))
        tf = csr_matrix((np.asarray(data, dtype=np.float64), indices, indptr), shape=shape)
        df = np.bincount(tf.indices, minlength=shape[1])
        self.idf: np.ndarray = np.log((1.0 + shape[0]) / (1.0 + df)) + 1.0
        weighted = tf.multiply(self.idf[np.newaxis, :]).tocsr()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.matrix: csr_matrix = csr_matrix(
            weighted.multiply(scale[:, np.newaxis]), dtype=np.float32
        )

    def profile_scores(self, weights: Mapping[str, float]) -> np.ndarray:
        """Cosine of every item (in ``item_ids`` order) to a user's content profile.

        The profile is the sum of the rows of the user's items weighted by their positive
        weights, scaled to unit length; negative weights (returns) and unknown items add
        nothing. All zeros when nothing remains.
        """
        positions = [self.item_positions.get(item_id) for item_id in weights]
        picked = [
            (position, weight)
            for position, weight in zip(positions, weights.values(), strict=True)
            if position is not None and weight > 0
        ]
        if not picked:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        rows, scale = zip(*picked, strict=True)
        profile = np.asarray(self.matrix[list(rows)].T @ np.asarray(scale, dtype=np.float32))
        norm = float(np.linalg.norm(profile))
        if norm == 0.0:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return self.matrix @ (profile / norm).astype(np.float32)

    def recommend_for_profile(
        self, weights: Mapping[str, float], n: int, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]:
        """The n available items most similar to a user's profile, by cosine, best first.

        Every item in ``weights`` counts as seen and is left out, whatever its weight, and so
        are the ids in ``exclude``, unavailable items and items sharing no term with the
        profile (score 0): the list may be shorter than n, and the caller fills it up.
        """
        scores = self.profile_scores(weights)
        candidates = (scores > 0) & self.available
        for item_id in (*weights, *exclude):
            position = self.item_positions.get(item_id)
            if position is not None:
                candidates[position] = False
        return self._top(scores, candidates, n)

    def similar(
        self, item_id: str, n: int, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]:
        """The n available items most similar to one item, by cosine; never the item itself.

        Empty for an unknown item or one without terms; the same rules as
        :meth:`recommend_for_profile`, whose profile is then just this item.
        """
        return self.recommend_for_profile({item_id: 1.0}, n, exclude)

    def _top(self, scores: np.ndarray, candidates: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Top n candidates by score, ties in item-id order, in time linear in the catalogue."""
        positions = np.flatnonzero(candidates)
        if n <= 0 or positions.size == 0:
            return []
        values = scores[positions]
        if positions.size > n:
            threshold = np.partition(values, positions.size - n)[positions.size - n]
            keep = values >= threshold  # all ties at the threshold, so the cut is deterministic
            positions, values = positions[keep], values[keep]
        order = np.lexsort((positions, -values))[:n]
        return [
            (self.item_ids[position], float(value))
            for position, value in zip(
                positions[order].tolist(), values[order].tolist(), strict=True
            )
        ]


def _min_max(ranked: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores scaled to [0, 1]; a list whose scores are all equal scales to 1.0 throughout."""
    if not ranked:
        return {}
    low = min(score for _, score in ranked)
    high = max(score for _, score in ranked)
    span = high - low
    scaled: dict[str, float] = {}
    for item_id, score in ranked:
        scaled.setdefault(item_id, (score - low) / span if span > 0 else 1.0)
    return scaled


def blend(
    content: Sequence[tuple[str, float]],
    popular: Sequence[tuple[str, float]],
    content_weight: float,
    n: int,
) -> list[tuple[str, float]]:
    """Merge two ranked lists into one of at most n items, best first.

    Each list's scores are min-max scaled to [0, 1] on their own (their units differ: cosine
    against decayed popularity), then ``content_weight * content + (1 - content_weight) *
    popular``, with 0 for an item absent from a list. Ties keep the order of first appearance,
    the content list before the popular one, so the result is deterministic.
    """
    if not 0.0 <= content_weight <= 1.0:
        raise ValueError(f"content_weight must be within [0, 1], got {content_weight}")
    content_scaled = _min_max(content)
    popular_scaled = _min_max(popular)
    merged = {
        item_id: content_weight * content_scaled.get(item_id, 0.0)
        + (1.0 - content_weight) * popular_scaled.get(item_id, 0.0)
        for item_id in (*content_scaled, *popular_scaled)
    }
    return sorted(merged.items(), key=lambda entry: -entry[1])[:n]
