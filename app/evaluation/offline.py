"""Offline evaluation: two splitting protocols, two models, ranking metrics with bootstrap CIs.

Pure numerics on lists of :class:`app.datasets.Event`; no Faust, Kafka, Redis or file I/O.

Protocols (``F`` is the test fraction):

* ``temporal``: the cut is the ``1 - F`` quantile of all event timestamps. Events before the
  cut train; each user with training events is tested on the items new to them whose summed
  weight from the cut on is positive.
* ``user-last``: each user with at least :data:`MIN_USER_EVENTS` events has their last
  ``max(1, floor(F * n))`` events (by time; file order among equal times) held out. Everything
  else trains; the user is tested on held-out items with a positive summed held-out weight that
  are not among their training items.

In both, relevant items the training data has never seen are dropped (no model can rank
them), and users left with no relevant item are not tested. Each tested user gets a ranking of
the whole catalogue (every item of the training events) minus the items of their own training
events. Metrics are computed per user, then averaged, with percentile-bootstrap 95% intervals
over users (the same resamples for every model and metric, so differences are paired).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from app import ranker
from app.actions import summed_weight
from app.datasets import Event
from app.ops.progress import Progress
from app.ranking_metrics import METRICS, user_metrics
from app.retraining import als_params
from app.settings import Settings

PROTOCOLS = ("temporal", "user-last")
MODELS = ("popularity", "als")
LIST_LENGTH = 20  # the longest cut-off among METRICS
MIN_USER_EVENTS = 5
RESAMPLES = 1000
SEED = 20240601
ALS_BATCH = 1024

Weight = Callable[[str], float]


def bootstrap_indices(users: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``resamples`` rows of ``users`` user positions drawn with replacement (fixed seed)."""
    return np.random.default_rng(seed).integers(0, users, size=(resamples, users))


def bootstrap_ci(values: Sequence[float], indices: np.ndarray) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of the mean of ``values`` over the resampled rows."""
    means = np.asarray(values, dtype=np.float64)[indices].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


# -- splits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Training events and, per tested user, the relevant items (non-empty, all in training)."""

    train: list[Event]
    relevant: dict[str, frozenset[str]]
    test_events: int
    cut: float | None = None  # the temporal protocol's cut (unix seconds)


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"the test fraction must be between 0 and 1, got {test_fraction}")


def _relevant(
    train: Iterable[Event], test: Iterable[Event], weight: Weight, users: Collection[str]
) -> dict[str, frozenset[str]]:
    """Per user in ``users``: test items with positive summed weight, known, not trained on."""
    catalogue = set()
    seen: dict[str, set[str]] = defaultdict(set)
    for event in train:
        catalogue.add(event.item_id)
        seen[event.user_id].add(event.item_id)
    summed: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in test:
        if event.user_id in users:
            row = summed[event.user_id]
            row[event.item_id] = summed_weight(row[event.item_id], weight(event.action))
    relevant = {}
    for user_id, items in summed.items():
        chosen = frozenset(
            item
            for item, total in items.items()
            if total > 0 and item in catalogue and item not in seen[user_id]
        )
        if chosen:
            relevant[user_id] = chosen
    return relevant


def temporal_split(events: Sequence[Event], test_fraction: float, weight: Weight) -> Split:
    """Train before the ``1 - test_fraction`` quantile of timestamps, test from it on."""
    _check_fraction(test_fraction)
    if not events:
        raise ValueError("no events to split")
    cut = float(np.quantile([event.timestamp for event in events], 1.0 - test_fraction))
    train = [event for event in events if event.timestamp < cut]
    test = [event for event in events if event.timestamp >= cut]
    users = {event.user_id for event in train}
    return Split(train, _relevant(train, test, weight, users), len(test), cut)


def held_out_count(events: int, test_fraction: float) -> int:
    """How many of a user's ``events`` the user-last protocol holds out (0 below the minimum)."""
    if events < MIN_USER_EVENTS:
        return 0
    return max(1, math.floor(test_fraction * events + 1e-9))


def user_last_split(events: Sequence[Event], test_fraction: float, weight: Weight) -> Split:
    """Hold out each active user's last events; see the module docs."""
    _check_fraction(test_fraction)
    by_user: dict[str, list[int]] = defaultdict(list)
    for position, event in enumerate(events):
        by_user[event.user_id].append(position)
    held_out: set[int] = set()
    for positions in by_user.values():
        count = held_out_count(len(positions), test_fraction)
        if count:
            ordered = sorted(positions, key=lambda position: events[position].timestamp)
            held_out.update(ordered[-count:])
    train = [event for position, event in enumerate(events) if position not in held_out]
    test = [events[position] for position in sorted(held_out)]
    users = {event.user_id for event in test}
    return Split(train, _relevant(train, test, weight, users), len(test))


def split_events(
    protocol: str, events: Sequence[Event], test_fraction: float, weight: Weight
) -> Split:
    """The split of a named protocol (one of :data:`PROTOCOLS`)."""
    if protocol == "temporal":
        return temporal_split(events, test_fraction, weight)
    if protocol == "user-last":
        return user_last_split(events, test_fraction, weight)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


# -- models -----------------------------------------------------------------------------------


def interaction_rows(events: Iterable[Event], weight: Weight) -> dict[str, dict[str, float]]:
    """User -> item -> summed action weight, as the product's per-user state holds it."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        row = rows[event.user_id]
        row[event.item_id] = summed_weight(row[event.item_id], weight(event.action))
    return {user_id: dict(items) for user_id, items in rows.items()}


def popularity_ranking(events: Iterable[Event], weight: Weight) -> list[str]:
    """Every item of ``events``, by summed positive event weight (ties by item id).

    Like the product's trending list, only positive weights count (a return does not make an
    item less popular), but without time decay.
    """
    scores: dict[str, float] = {}
    for event in events:
        scores[event.item_id] = scores.get(event.item_id, 0.0) + max(0.0, weight(event.action))
    return sorted(scores, key=lambda item: (-scores[item], item))


def popular_unseen(ranking: Sequence[str], seen: Collection[str], n: int) -> list[str]:
    """The first n items of a popularity ranking that are not in ``seen``."""
    return [item for item in ranking if item not in seen][:n]


def als_lists(
    model: ranker.FactorModel,
    rows: Sequence[Mapping[str, float]],
    n: int,
    fallback: Callable[[Mapping[str, float]], list[str]],
    done: Callable[[int], object] | None = None,
) -> tuple[list[list[str]], int]:
    """Top-n lists of :func:`app.ranker.recommend` with every item of each row excluded.

    ``recommend`` only filters items with a non-zero summed weight, so a few more are asked
    for and the rest of the row is removed here. A row the model cannot fold in (no known item
    with a non-zero weight) gets ``fallback(row)``, as the product falls back to popularity.
    ``done(count)`` is told of each batch of rows finished. Returns the lists and the number of
    fallbacks.
    """
    lists: list[list[str]] = []
    fallbacks = 0
    for start in range(0, len(rows), ALS_BATCH):
        batch = rows[start : start + ALS_BATCH]
        unfiltered = max((sum(1 for w in row.values() if w == 0.0) for row in batch), default=0)
        for row, scored in zip(batch, ranker.recommend(model, batch, n + unfiltered), strict=True):
            if scored:
                lists.append([item for item, _ in scored if item not in row][:n])
            else:
                lists.append(fallback(row))
                fallbacks += 1
        if done is not None:
            done(len(batch))
    return lists, fallbacks


# -- the whole evaluation ---------------------------------------------------------------------


def score(
    lists: Sequence[Sequence[str]], relevant: Sequence[Collection[str]]
) -> dict[str, np.ndarray]:
    """Metric -> per-user values, for users' lists and relevant items in the same order."""
    values = [user_metrics(ranked, items) for ranked, items in zip(lists, relevant, strict=True)]
    return {metric: np.array([v[metric] for v in values]) for metric in METRICS}


def summarize(per_user: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, object]:
    """Means of per-user metric values and their bootstrap 95% intervals."""
    summary: dict[str, object] = {m: round(float(per_user[m].mean()), 4) for m in METRICS}
    summary["ci95"] = {
        m: [round(bound, 4) for bound in bootstrap_ci(per_user[m], indices)] for m in METRICS
    }
    return summary


@dataclass(frozen=True, eq=False)
class Task:
    """A split made ready for scoring: tested users (sorted), their rows and relevant items."""

    protocol: str
    test_fraction: float
    events: int
    split: Split
    users: list[str]
    rows: dict[str, dict[str, float]]  # every training user's row
    relevant: list[frozenset[str]]  # in the order of ``users``
    ranking: list[str]  # the training catalogue by popularity
    indices: np.ndarray  # bootstrap resamples of user positions

    def describe(self) -> dict[str, object]:
        return {
            "events": self.events,
            "train_events": len(self.split.train),
            "test_events": self.split.test_events,
            "train_users": len(self.rows),
            "items": len(self.ranking),
            "cut": self.split.cut,
        }


def prepare(events: Sequence[Event], protocol: str, test_fraction: float, weight: Weight) -> Task:
    """Split the events by a protocol and index what every model's scoring needs."""
    split = split_events(protocol, events, test_fraction, weight)
    users = sorted(split.relevant)
    if not users:
        raise ValueError("no user has a relevant test item; nothing to evaluate")
    return Task(
        protocol=protocol,
        test_fraction=test_fraction,
        events=len(events),
        split=split,
        users=users,
        rows=interaction_rows(split.train, weight),
        relevant=[split.relevant[user] for user in users],
        ranking=popularity_ranking(split.train, weight),
        indices=bootstrap_indices(len(users)),
    )


def score_popularity(task: Task) -> dict[str, np.ndarray]:
    """Per-user metrics of the popularity model."""
    lists = [popular_unseen(task.ranking, task.rows[user], LIST_LENGTH) for user in task.users]
    return score(lists, task.relevant)


def score_als(
    task: Task, params: ranker.AlsParams, progress: Progress | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Per-user metrics of ALS fitted on the task's training rows, and the fallback count."""
    progress = progress or Progress.silent()
    rows = list(task.rows.values())
    with progress.bar("ALS fit", params.iterations, "iteration") as bar:
        model = ranker.fit(rows, params, "evaluation", time.time(), lambda *_: bar.update())
    with progress.bar("ALS lists", len(task.users), "user") as bar:
        lists, fallbacks = als_lists(
            model,
            [task.rows[user] for user in task.users],
            LIST_LENGTH,
            lambda row: popular_unseen(task.ranking, row, LIST_LENGTH),
            bar.update,
        )
    return score(lists, task.relevant), fallbacks


def evaluate(
    events: Sequence[Event],
    protocol: str,
    test_fraction: float,
    models: Sequence[str],
    settings: Settings,
    params: ranker.AlsParams | None = None,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Split, fit and score; the report ``python -m app evaluate`` prints as JSON.

    ``params`` overrides the ALS parameters taken from ``settings``.
    """
    progress = progress or Progress.silent()
    unknown = [model for model in models if model not in MODELS]
    if unknown or not models:
        raise ValueError(f"unknown models {unknown}; expected some of {', '.join(MODELS)}")
    started = time.perf_counter()
    task = prepare(events, protocol, test_fraction, settings.weight)
    split = task.describe()
    progress(
        f"{protocol} split: {split['train_events']} training and {split['test_events']} test "
        f"events, {split['train_users']} training users, {split['items']} items, "
        f"{len(task.users)} users tested ({time.perf_counter() - started:.1f} s)"
    )
    summaries: dict[str, dict[str, object]] = {}
    per_model: dict[str, dict[str, np.ndarray]] = {}
    for name in models:
        started = time.perf_counter()
        extra: dict[str, object] = {}
        if name == "popularity":
            per_model[name] = score_popularity(task)
        else:
            chosen = params or als_params(settings)
            progress(f"fitting ALS {chosen} on {len(task.rows)} users")
            per_model[name], fallbacks = score_als(task, chosen, progress)
            extra = {"params": asdict(chosen), "popularity_fallbacks": fallbacks}
        summaries[name] = {**summarize(per_model[name], task.indices), **extra}
        means = ", ".join(f"{m} {summaries[name][m]:.4f}" for m in METRICS)
        progress(f"{name}: {means} ({time.perf_counter() - started:.1f} s)")
    report: dict[str, object] = {
        "protocol": protocol,
        "test_fraction": test_fraction,
        "users": len(task.users),
        "split": split,
        "models": summaries,
    }
    if "popularity" in per_model and "als" in per_model:
        difference = {m: per_model["als"][m] - per_model["popularity"][m] for m in METRICS}
        report["als_minus_popularity"] = summarize(difference, task.indices)
    return report
