"""Whether a newly fitted model may replace the one being served.

The trainer holds out the newest interactions that the serving model was not fitted on, fits the
candidate without them, and asks both models, test-then-learn, to rank for each of those users
from the rest of their row: HR@10 and NDCG@10 over the users (:mod:`app.ranking_metrics`). A
candidate below the serving model by more than a share ``margin`` of either score, beyond
chance, is refused: the one-sided 95% upper bound of the mean per-user difference
``candidate - (1 - margin) x serving`` (paired, normal approximation) must be below zero. On a
stream without signal both scores sit near zero and a shortfall of a few hits is noise; only a
candidate shown to be worse stays out.
Neither model has seen the held-out interactions, so the comparison is fair to both.

After a model went live, :func:`live_regression` is the trainer's rule for rolling it back on
the workers' live test-then-learn counts.

Pure numerics (numpy, scipy, the ranker); no Faust, no Redis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from app import ranker
from app.ranking_metrics import hit_rate_at, ndcg_at

CHECKED = ("HR@10", "NDCG@10")
LIST_LENGTH = 10
ONE_SIDED_95 = 1.6449
"""The standard normal quantile of a one-sided 95% bound."""


@dataclass(frozen=True)
class HeldOut:
    """Per tested user: the row without the held-out items, and those items (relevant)."""

    users: list[str]
    rows: list[dict[str, float]]
    relevant: list[frozenset[str]]

    @property
    def pairs(self) -> int:
        return sum(len(items) for items in self.relevant)

    def by_user(self) -> dict[str, frozenset[str]]:
        return dict(zip(self.users, self.relevant, strict=True))


def held_out(
    pairs: Iterable[tuple[str, str]], row_of: Callable[[str], Mapping[str, float] | None]
) -> HeldOut:
    """Group (user, item) pairs by user against each user's current row (``row_of``; None for
    a user gone). A pair counts when its item has a positive weight in the row; a user counts
    when some other item of theirs has one, as a model can only rank for a row it can fold in."""
    grouped: dict[str, set[str]] = defaultdict(set)
    for user_id, item_id in pairs:
        grouped[user_id].add(item_id)
    users, rows, relevant = [], [], []
    for user_id, items in grouped.items():
        row = row_of(user_id)
        if row is None:
            continue
        chosen = frozenset(item for item in items if row.get(item, 0.0) > 0)
        rest = {item: weight for item, weight in row.items() if item not in items}
        if chosen and any(weight > 0 for weight in rest.values()):
            users.append(user_id)
            rows.append(rest)
            relevant.append(chosen)
    return HeldOut(users, rows, relevant)


def without_pairs(
    matrix: csr_matrix,
    row_users: list[str],
    item_ids: tuple[str, ...],
    held: Mapping[str, frozenset[str]],
) -> csr_matrix:
    """The fit matrix (rows in ``row_users`` order, columns in ``item_ids`` order) with the
    held-out pairs left out."""
    columns = {item_id: column for column, item_id in enumerate(item_ids)}
    kept = np.ones(matrix.nnz, dtype=bool)
    for row, user_id in enumerate(row_users):
        items = held.get(user_id)
        if not items:
            continue
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        wanted = [columns[item] for item in items if item in columns]
        kept[start:end] &= ~np.isin(matrix.indices[start:end], wanted)
    pruned = matrix.copy()
    pruned.data = np.where(kept, pruned.data, 0)
    pruned.eliminate_zeros()
    return pruned


def user_scores(model: ranker.FactorModel, held: HeldOut) -> dict[str, np.ndarray]:
    """Each held-out user's HR@10 and NDCG@10 of the model's top 10 (from their row)."""
    ranked = ranker.recommend(model, held.rows, LIST_LENGTH)
    lists = [[item for item, _ in scored] for scored in ranked]
    pairs = list(zip(lists, held.relevant, strict=True))
    return {
        "HR@10": np.array([hit_rate_at(r, items, LIST_LENGTH) for r, items in pairs]),
        "NDCG@10": np.array([ndcg_at(r, items, LIST_LENGTH) for r, items in pairs]),
    }


@dataclass(frozen=True)
class Verdict:
    """The candidate's and the serving model's mean scores on the same held-out users, and per
    metric the upper bound of the candidate's shortfall (see the module docs)."""

    candidate: dict[str, float]
    serving: dict[str, float]
    shortfall_bound: dict[str, float]
    users: int
    pairs: int
    margin: float

    @property
    def accepted(self) -> bool:
        return all(self.shortfall_bound[m] >= 0 for m in CHECKED)

    def describe(self) -> str:
        compared = ", ".join(
            f"{m} {self.candidate[m]:.4f} vs {self.serving[m]:.4f}"
            f" (bound {self.shortfall_bound[m]:+.4f})"
            for m in CHECKED
        )
        return f"{compared} (candidate vs serving, {self.users} users, {self.pairs} pairs)"

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "candidate": self.candidate,
            "serving": self.serving,
            "shortfall_bound": self.shortfall_bound,
            "users": self.users,
            "pairs": self.pairs,
            "margin": self.margin,
        }


def live_regression(
    newest: tuple[int, int], previous: tuple[int, int], minimum: int, margin: float
) -> bool:
    """Whether the newest model's live (trials, hits) show an HR@10 below the previous model's
    by more than a share ``margin`` of it, both over at least ``minimum`` trials."""
    (trials, hits), (before_trials, before_hits) = newest, previous
    if min(trials, before_trials) < max(minimum, 1):
        return False
    return hits / trials < before_hits / before_trials * (1 - margin)


def judge(
    candidate: Mapping[str, np.ndarray],
    serving: Mapping[str, np.ndarray],
    margin: float,
    pairs: int,
) -> Verdict:
    """The verdict on per-user scores of both models, user for user in the same order."""
    bounds = {}
    for metric in CHECKED:
        shortfall = candidate[metric] - (1 - margin) * serving[metric]
        spread = shortfall.std(ddof=1) / np.sqrt(len(shortfall)) if len(shortfall) > 1 else 0.0
        bounds[metric] = float(shortfall.mean() + ONE_SIDED_95 * spread)
    return Verdict(
        {metric: float(candidate[metric].mean()) for metric in CHECKED},
        {metric: float(serving[metric].mean()) for metric in CHECKED},
        bounds,
        len(candidate[CHECKED[0]]),
        pairs,
        margin,
    )


def compare(
    candidate: ranker.FactorModel, serving: ranker.FactorModel, held: HeldOut, margin: float
) -> Verdict:
    """Score both models on the held-out users; see the module docs."""
    return judge(user_scores(candidate, held), user_scores(serving, held), margin, held.pairs)
