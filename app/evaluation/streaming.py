"""Streaming (prequential) evaluation: replay events in time order and, before feeding each
probe event, read what every variant would show that user right then.

Pure numerics on lists of :class:`app.datasets.Event`, no Faust, Kafka, Redis or I/O. The
product's lists come from the serving policy itself (:func:`app.serving.user_lists`), its
popularity from :class:`app.popularity.Popularity` and its refits from
:class:`app.retraining.RetrainPolicy`, the same functions the worker and the trainer run. The
real-pipeline mode (:mod:`app.evaluation.pipeline`) reads the product's lists from a running
worker instead and is scored by the same functions here.

Protocol (docs/EVALUATION.md, "Streaming evaluation"):

* Events are sorted by timestamp (file order among equal times). The cut is the
  ``warmup_fraction`` quantile of the timestamps, as in the temporal protocol: events before it
  are the warm-up, the others the stream, replayed one by one.
* A **probe** is a stream event with a positive weight whose user has an earlier event and
  whose item that user has no earlier event on. Before it is fed, each variant's top 10 for the
  user is read; the probe scores HR@10 (its item is in the list) and NDCG@10
  (``1 / log2(rank + 1)``, one relevant item).
* Variants (see :func:`simulate`): ``product``, ``no-refit``, ``frozen``, ``popularity``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from app import ranker, serving
from app.actions import summed_weight
from app.datasets import Event
from app.evaluation.offline import bootstrap_indices
from app.ops.progress import Progress
from app.popularity import Popularity, Trending
from app.ranking_metrics import hit_rate_at, ndcg_at
from app.retraining import RetrainPolicy, als_params
from app.serving import CatalogueSnapshot, ServingRules, UserHistory
from app.settings import Settings

K = 10
VARIANTS = ("product", "no-refit", "frozen", "popularity")
PIPELINE_VARIANTS = ("product", "popularity")
"""What the real-pipeline mode can read from a worker: its lists and its popularity."""

Weight = Callable[[str], float]
Row = dict[str, float]


NO_CATALOGUE = CatalogueSnapshot()
"""No catalogue: no content lists, every item available (Online Retail comes without one)."""


@dataclass(frozen=True)
class Stream:
    """Events before the cut (warm-up) and from it on (replayed), both in time order."""

    warmup: list[Event]
    replay: list[Event]
    cut: float


class Outcome(NamedTuple):
    """One probe: the event at ``position`` of the replay and each variant's top 10 before it."""

    position: int
    user_id: str
    item_id: str
    timestamp: float
    lists: dict[str, list[str]]
    item_known: bool | None  # the product's model has the item (None: not known to the run)


@dataclass(frozen=True)
class Fit:
    """A (simulated) full fit: when, why, on how much, and how long it took here."""

    timestamp: float
    reason: str  # "warm-up", or the trainer's: "schedule" or "data grew"
    events: int
    users: int
    items: int
    seconds: float


@dataclass
class Run:
    """The outcome of every probe, the fits, and the stream that was replayed."""

    stream: Stream
    outcomes: list[Outcome]
    fits: list[Fit]
    replayed: int  # stream events fed (the whole stream, or the first ``limit``)


# -- the stream and its probes ----------------------------------------------------------------


def split_stream(events: Sequence[Event], warmup_fraction: float) -> Stream:
    """Sort by time (stably) and cut at the ``warmup_fraction`` quantile of the timestamps."""
    if not 0.0 < warmup_fraction < 1.0:
        raise ValueError(f"the warm-up fraction must be between 0 and 1, got {warmup_fraction}")
    if not events:
        raise ValueError("no events to replay")
    ordered = sorted(events, key=lambda event: event.timestamp)
    cut = float(np.quantile([event.timestamp for event in ordered], warmup_fraction))
    warmup = [event for event in ordered if event.timestamp < cut]
    return Stream(warmup, ordered[len(warmup) :], cut)


def find_probes(stream: Stream, weight: Weight, limit: int | None = None) -> list[int]:
    """Positions in ``stream.replay`` (among the first ``limit``) of the probe events."""
    seen: dict[str, set[str]] = defaultdict(set)
    for event in stream.warmup:
        seen[event.user_id].add(event.item_id)
    probes = []
    for position, event in enumerate(stream.replay[:limit]):
        items = seen[event.user_id]
        if items and event.item_id not in items and weight(event.action) > 0:
            probes.append(position)
        items.add(event.item_id)
    return probes


def _needs_list(replay: Sequence[Event], probes: Collection[int]) -> tuple[set[str], list[bool]]:
    """Whose cached list a probe will read: users whose first replayed event is a probe, and
    per position whether the user's next event is one (their list after it is read)."""
    first_is_probe: set[str] = set()
    after = [False] * len(replay)
    last: dict[str, int] = {}
    for position, event in enumerate(replay):
        previous = last.get(event.user_id)
        if position in probes:
            if previous is None:
                first_is_probe.add(event.user_id)
            else:
                after[previous] = True
        last[event.user_id] = position
    return first_is_probe, after


# -- the variants' building blocks ------------------------------------------------------------


def top_unseen(popularity: Popularity, seen: Collection[str], n: int) -> list[str]:
    """The n most popular items not in ``seen`` (the popularity variant's list)."""
    return [item for item, _ in popularity.top(n + len(seen)) if item not in seen][:n]


def served_top(
    model: ranker.FactorModel,
    user: UserHistory,
    catalogue: CatalogueSnapshot,
    popular: Trending,
    rules: ServingRules,
    now: float,
) -> list[str]:
    """The first K items of the list the serving policy (:func:`app.serving.user_lists`)
    serves this user: content, personal or popular, as the worker caches it."""
    (served,) = serving.user_lists(model, [user], catalogue, popular, rules, now)
    return [item for item, _ in served["items"][:K]]


class FrozenUsers:
    """User vectors solved once, from the warm-up rows against the warm-up model."""

    def __init__(self, model: ranker.FactorModel, rows: Mapping[str, Row]) -> None:
        self.model = model
        users = list(rows)
        matrix = model.rows_matrix([rows[user] for user in users])
        vectors = ranker.fold_in(model, [rows[user] for user in users])
        known = np.diff(matrix.indptr) > 0
        self.vectors = {user: vectors[i] for i, user in enumerate(users) if known[i]}

    def top(self, user_id: str, row: Row) -> list[str] | None:
        """The top 10 of the fixed vector minus the row's items (as implicit filters them:
        the ones the model knows, with a non-zero summed weight); None for an unknown user."""
        vector = self.vectors.get(user_id)
        if vector is None:
            return None
        scores = self.model.als.item_factors @ vector
        scores[self.model.rows_matrix([row]).indices] = -np.inf
        n = min(K, len(scores))
        best = np.argpartition(-scores, n - 1)[:n]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [self.model.item_ids[position] for position in best if scores[position] > -np.inf]


# -- the simulation ---------------------------------------------------------------------------


class _Trainer:
    """The trainer's decisions (``app.trainer.Trainer``: :class:`RetrainPolicy`) on stream
    time; fits are instant."""

    def __init__(
        self,
        rows: Mapping[str, Row],
        params: ranker.AlsParams,
        policy: RetrainPolicy,
        say: Progress,
    ) -> None:
        self.rows = rows
        self.params = params
        self.policy = policy
        self.say = say
        self.fits: list[Fit] = []
        self.events = 0  # fed so far
        self.events_at_fit = 0
        self.last_fit_at = -math.inf
        self.last_fold_at = -math.inf
        self.new_item_users: dict[str, set[str]] = defaultdict(set)
        self.model: ranker.FactorModel | None = None

    def fit(self, timestamp: float, reason: str) -> ranker.FactorModel:
        started = time.perf_counter()
        events = self.events
        model = ranker.fit(list(self.rows.values()), self.params, reason, timestamp)
        seconds = round(time.perf_counter() - started, 3)
        self.fits.append(
            Fit(timestamp, reason, events, len(self.rows), len(model.item_ids), seconds)
        )
        self.say(
            f"fit {len(self.fits)} ({reason}) at {day(timestamp)}: {events} events, {seconds} s"
        )
        self.events_at_fit, self.last_fit_at = events, timestamp
        self.new_item_users.clear()
        self.model = model
        return model

    def _fit_reason(self, timestamp: float) -> str | None:
        return self.policy.fit_reason(
            has_model=self.model is not None,
            requested=False,
            seconds_since_fit=timestamp - self.last_fit_at,
            events=self.events,
            events_at_fit=self.events_at_fit,
        )

    def fed(self, event: Event) -> None:
        """After an event: count it, note a new item, refit when the data grew enough.

        Only "data grew" can be due here: a due schedule was handled before the event."""
        self.events += 1
        assert self.model is not None
        if event.item_id not in self.model.item_positions:
            self.new_item_users[event.item_id].add(event.user_id)
        reason = self._fit_reason(event.timestamp)
        if reason is not None:
            self.fit(event.timestamp, reason)

    def before(self, timestamp: float) -> None:
        """Before an event at ``timestamp``: a scheduled refit or a new-item fold when due.

        The scheduled refit is dated when it fell due. One that found no new event since the
        last fit would refit the same rows into the same model: only its time is kept.
        """
        reason = self._fit_reason(timestamp)
        if reason == "schedule":
            interval = self.policy.interval
            due = self.last_fit_at + interval
            if self.events > self.events_at_fit:
                self.fit(due, reason)
            self.last_fit_at = due + math.floor((timestamp - due) / interval) * interval
            return
        if reason is not None:  # growth is checked after each event: not due here
            self.fit(timestamp, reason)
            return
        if self.policy.fold_due(timestamp - self.last_fold_at, bool(self.new_item_users)):
            assert self.model is not None
            self.last_fold_at = timestamp
            users = set().union(*self.new_item_users.values())
            self.new_item_users.clear()
            rows = [self.rows[user] for user in users]
            self.model = ranker.fold_in_new_items(self.model, rows, "new-items", timestamp)


def simulate(
    stream: Stream,
    settings: Settings,
    policy: RetrainPolicy,
    limit: int | None = None,
    params: ranker.AlsParams | None = None,
    progress: Progress | None = None,
    catalogue: CatalogueSnapshot = NO_CATALOGUE,
) -> Run:
    """Replay the stream (its first ``limit`` events) in process; every variant's lists.

    * ``product``: ALS fitted on the warm-up at the cut; then the trainer's rules on stream
      time (:class:`app.retraining.RetrainPolicy`): refits on everything fed so far, and new
      items folded in. Fits take no stream time here (the trainer fits on a thread while the
      old model serves). After each event, the user's list is recomputed as the worker's
      refresher does: the serving policy (:func:`app.serving.user_lists`) on the user's event
      count and full row, the current model, ``catalogue`` and the popularity's top
      :attr:`~app.serving.ServingRules.popular_depth` (content list for a user with few
      events whom the catalogue matches, else exact fold-in of the row, else popular; never an
      unavailable item), cut to its first 10, and cached; a probe reads the cached list, so the
      first read after a model change shows the previous model's list, as ``GET /recommend``
      does.
    * ``no-refit``: the same with the warm-up model kept forever (no refit, no new-item fold):
      user vectors are re-solved from the updated rows, item factors stay as at the cut.
    * ``frozen``: the warm-up model and the warm-up user vectors, both fixed; only the seen
      filter follows the stream. Users without a vector at the cut get the serving policy's
      popular list (:func:`app.serving.popular_list`).
    * ``popularity``: the product's time-decayed popularity now (``popularity_half_life``,
      :class:`app.popularity.Popularity`), minus the user's items.
    """
    progress = progress or Progress.silent()
    weight = settings.weight
    rules = ServingRules.of(settings)
    replay = stream.replay[:limit]
    probes = set(find_probes(stream, weight, limit))
    first_is_probe, needs_after = _needs_list(replay, probes)

    rows: dict[str, Row] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)  # events per user, as the worker's state counts
    popularity = Popularity(rules.popularity_half_life)

    def feed(event: Event) -> None:
        w = weight(event.action)
        row = rows[event.user_id]
        row[event.item_id] = summed_weight(row.get(event.item_id, 0.0), w)
        counts[event.user_id] += 1
        popularity.add(event.item_id, w, event.timestamp)

    def user(user_id: str) -> UserHistory:
        return UserHistory(counts[user_id], rows[user_id])

    for event in stream.warmup:
        feed(event)
    trainer = _Trainer(rows, params or als_params(settings), policy, progress)
    trainer.events = len(stream.warmup)
    warm = trainer.fit(stream.cut, "warm-up")
    frozen = FrozenUsers(warm, rows)
    product: dict[str, list[str]] = {}
    no_refit: dict[str, list[str]] = {}
    popular = popularity.trending(rules.popular_depth, rules.popularity_clock, stream.cut)
    for user_id in first_is_probe:
        if user_id in rows:
            product[user_id] = no_refit[user_id] = served_top(
                warm, user(user_id), catalogue, popular, rules, stream.cut
            )
    outcomes: list[Outcome] = []
    for position, event in enumerate(progress.bar("replay", len(replay), "event", replay)):
        trainer.before(event.timestamp)
        model = trainer.model
        assert model is not None
        if position in probes:
            row = rows[event.user_id]
            frozen_list = frozen.top(event.user_id, row)
            if frozen_list is None:
                popular = popularity.trending(
                    rules.popular_depth, rules.popularity_clock, event.timestamp
                )
                fallback = serving.popular_list(
                    popular, row, catalogue, rules, event.timestamp, warm.version
                )
                frozen_list = [item for item, _ in fallback["items"][:K]]
            lists = {
                "product": product.pop(event.user_id),
                "no-refit": no_refit.pop(event.user_id),
                "frozen": frozen_list,
                "popularity": top_unseen(popularity, row, K),
            }
            known = event.item_id in model.item_positions
            outcomes.append(
                Outcome(position, event.user_id, event.item_id, event.timestamp, lists, known)
            )
        feed(event)
        if needs_after[position]:
            history = user(event.user_id)
            popular = popularity.trending(
                rules.popular_depth, rules.popularity_clock, event.timestamp
            )
            product[event.user_id] = served_top(
                model, history, catalogue, popular, rules, event.timestamp
            )
            no_refit[event.user_id] = (
                product[event.user_id]
                if model is warm
                else served_top(warm, history, catalogue, popular, rules, event.timestamp)
            )
        trainer.fed(event)
        if (position + 1) % 20_000 == 0:
            progress(f"replayed {position + 1} of {len(replay)} events, {len(outcomes)} probes")
    return Run(stream, outcomes, trainer.fits, len(replay))


# -- scoring ----------------------------------------------------------------------------------


def probe_scores(outcome: Outcome, variant: str) -> tuple[float, float]:
    """HR@10 and NDCG@10 of one probe for one variant."""
    relevant = {outcome.item_id}
    ranked = outcome.lists[variant]
    return hit_rate_at(ranked, relevant, K), ndcg_at(ranked, relevant, K)


def summarize(outcomes: Sequence[Outcome], variants: Sequence[str]) -> dict[str, object]:
    """HR@10 and NDCG@10 over all probes per variant, with 95% intervals from a bootstrap over
    users (a resampled user brings all their probes), and each variant's paired difference
    from the first one."""
    if not outcomes:
        raise ValueError("no probes to score")
    users = sorted({outcome.user_id for outcome in outcomes})
    index = {user: i for i, user in enumerate(users)}
    counts = np.zeros(len(users))
    sums = {v: {"HR@10": np.zeros(len(users)), "NDCG@10": np.zeros(len(users))} for v in variants}
    for outcome in outcomes:
        u = index[outcome.user_id]
        counts[u] += 1
        for variant in variants:
            hit, gain = probe_scores(outcome, variant)
            sums[variant]["HR@10"][u] += hit
            sums[variant]["NDCG@10"][u] += gain
    resamples = bootstrap_indices(len(users))
    resampled_counts = counts[resamples].sum(axis=1)

    def describe(values: np.ndarray) -> dict[str, object]:
        low, high = np.percentile(values[resamples].sum(axis=1) / resampled_counts, [2.5, 97.5])
        return {
            "mean": round(float(values.sum() / counts.sum()), 4),
            "ci95": [round(float(low), 4), round(float(high), 4)],
        }

    report: dict[str, object] = {
        "probes": len(outcomes),
        "users": len(users),
        "cold_item_probes": sum(outcome.item_known is False for outcome in outcomes),
        "variants": {
            v: {metric: describe(values) for metric, values in sums[v].items()} for v in variants
        },
    }
    base = variants[0]
    report[f"{base}_minus"] = {
        v: {m: describe(sums[base][m] - sums[v][m]) for m in ("HR@10", "NDCG@10")}
        for v in variants[1:]
    }
    return report


def day(timestamp: float) -> str:
    """The UTC date of a unix time, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def daily_series(outcomes: Iterable[Outcome], variants: Sequence[str]) -> list[dict[str, object]]:
    """Per UTC day of stream time: probes and each variant's HR@10 that day."""
    days: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        days[day(outcome.timestamp)].append(outcome)
    return [
        {
            "day": day,
            "probes": len(chunk),
            "HR@10": {
                v: round(sum(probe_scores(o, v)[0] for o in chunk) / len(chunk), 4)
                for v in variants
            },
        }
        for day, chunk in sorted(days.items())
    ]


def agreement(
    first: Sequence[Outcome], second: Sequence[Outcome], variant: str
) -> dict[str, float | int]:
    """How alike two runs of the same probes are for one variant: the share of probes with
    the same hit or miss, and with the same top 10 (as a set)."""
    if [o.position for o in first] != [o.position for o in second]:
        raise ValueError("the runs did not probe the same events")
    if not first:
        raise ValueError("no probes to compare")
    same_hit = sum(
        probe_scores(a, variant)[0] == probe_scores(b, variant)[0]
        for a, b in zip(first, second, strict=True)
    )
    same_list = sum(
        set(a.lists[variant]) == set(b.lists[variant]) for a, b in zip(first, second, strict=True)
    )
    return {
        "probes": len(first),
        "same_hit": round(same_hit / len(first), 4),
        "same_top10": round(same_list / len(first), 4),
    }
