"""This worker's operational metrics, in the Prometheus registry served at ``GET /metrics``.

The counts start at zero when the worker starts, like any process metric; the dead-letter topic
itself keeps every refused message. A message re-delivered after a crash is counted again when it
is read again: ``recsys_duplicates_skipped_total`` is how many such re-deliveries changed nothing.
No Faust import here, so the recommender (used by benchmarks without a worker) can record too.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram, Info

from app.actions import IMPRESSION

OTHER_ACTION = "other"
events_accepted = Counter(
    "recsys_events_accepted", "Events acknowledged by Kafka for POST /events.", ["action"]
)
events_processed = Counter(
    "recsys_events_processed", "Events applied to a user's state by the stream.", ["action"]
)
dead_lettered = Counter(
    "recsys_events_dead_lettered",
    "Messages sent to the dead-letter topic, by the field at fault.",
    ["field"],
)
duplicates_skipped = Counter(
    "recsys_duplicates_skipped", "Re-delivered messages recognised as already applied."
)
rekeyed = Counter("recsys_events_rekeyed", "Messages moved to their user's partition.")
users_erased = Counter("recsys_users_erased", "Erasures applied to a user's state by the stream.")
fold_in_batch_users = Histogram(
    "recsys_fold_in_batch_users",
    "Users whose lists one fold-in recomputed.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
fold_in_seconds = Histogram(
    "recsys_fold_in_seconds",
    "Time to recompute and write one batch of lists.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
freshness_seconds = Histogram(
    "recsys_freshness_seconds",
    "From an event's Kafka timestamp to its user's new list written to Redis.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)
consumer_lag = Gauge(
    "recsys_consumer_lag_records",
    "Records of this worker's partitions not yet committed: log end minus committed offset.",
    ["topic", "partition"],
)
model = Info("recsys_model", "The model version this worker serves.")
retrain_seconds = Gauge("recsys_retrain_seconds", "Fit time of the model this worker serves.")
cache_requests = Counter(
    "recsys_cache_requests",
    "GET /recommend answered from Redis (hit) or computed (miss).",
    ["result"],
)
check_score = Gauge(
    "recsys_model_check_score",
    "The trainer's last check of a candidate: its held-out score and the serving model's.",
    ["model", "metric"],
)
candidates_refused = Gauge(
    "recsys_model_candidates_refused", "Candidate models the check kept from going live."
)


def export_check(check: dict | None, refused: int) -> None:
    """Set the check gauges from :meth:`app.stores.model.ModelStore.last_check`."""
    candidates_refused.set(refused)
    if check is not None:
        for model in ("candidate", "serving"):
            for metric, value in check[model].items():
                check_score.labels(model, metric).set(value)


live_hits = Counter(
    "recsys_live_hits", "Positive events whose item was in the user's cached top 10 before it."
)
live_trials = Counter(
    "recsys_live_trials", "Positive events of users with a top 10 written by this worker."
)
live_hit_ratio = Gauge(
    "recsys_live_hit_at_10_ratio", "HR@10 over the last LIVE_WINDOW live trials (test, then learn)."
)
http_request_seconds = Histogram(
    "recsys_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and status (its _count counts them).",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LIVE_WINDOW = 1000
TOP_K = 10


class LiveHitRate:
    """Test-then-learn HR@10: before an event is applied, was its item in the top 10 this worker
    last wrote for the user? Bounded (least recently written users are forgotten)."""

    def __init__(self, max_users: int = 100_000) -> None:
        self.max_users = max_users
        self._top: OrderedDict[str, tuple[frozenset[str], str | None]] = OrderedDict()
        self._window: deque[bool] = deque()
        self._window_hits = 0
        self._by_model: dict[str, list[int]] = {}  # model version -> [trials, hits], unflushed

    def written(self, user_id: str, items: Iterable[str], model_version: str | None) -> None:
        """Remember the top 10 of a list just written for this user, and the model version it
        came from (None when no model ranked it: popular or content lists)."""
        self._top[user_id] = (frozenset(items), model_version)
        self._top.move_to_end(user_id)
        if len(self._top) > self.max_users:
            self._top.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """An erased user: their last top 10 is dropped."""
        self._top.pop(user_id, None)

    def test(self, user_id: str, item_id: str) -> bool | None:
        """Score one positive event against the user's last written top 10, if there is one:
        whether it was a hit, None without a top 10 to score."""
        written = self._top.get(user_id)
        if written is None:
            return None
        top, model_version = written
        hit = item_id in top
        if model_version is not None:
            counts = self._by_model.setdefault(model_version, [0, 0])
            counts[0] += 1
            counts[1] += hit
        live_trials.inc()
        if hit:
            live_hits.inc()
        self._window.append(hit)
        self._window_hits += hit
        if len(self._window) > LIVE_WINDOW:
            self._window_hits -= self._window.popleft()
        live_hit_ratio.set(self.rate)
        return hit

    def take_by_model(self) -> dict[str, list[int]]:
        """The trials and hits per model version since the last call, for the deployment-wide
        counts (:meth:`app.stores.model.ModelStore.add_live_trials`)."""
        taken, self._by_model = self._by_model, {}
        return taken

    def put_back(self, counts: Mapping[str, list[int]]) -> None:
        """Counts taken but not stored (Redis failed): kept for the next flush."""
        for version, (trials, hits) in counts.items():
            mine = self._by_model.setdefault(version, [0, 0])
            mine[0] += trials
            mine[1] += hits

    @property
    def rate(self) -> float:
        """Hits over the last ``LIVE_WINDOW`` trials (0 before the first)."""
        return self._window_hits / len(self._window) if self._window else 0.0


experiment_counts = Counter(
    "recsys_experiment",
    "Per experiment arm: lists served (served), events answering one (answered), live HR@10 "
    "trials (trials) and hits (hits).",
    ["arm", "counter"],
)
experiment_hit_ratio = Gauge(
    "recsys_experiment_live_hit_at_10_ratio",
    "Per arm: live HR@10, hits over trials so far.",
    ["arm"],
)
experiment_click_through = Gauge(
    "recsys_experiment_click_through_ratio",
    "Per arm: answering events over lists served so far.",
    ["arm"],
)


class ArmTally:
    """This worker's experiment counts per arm (``app.experiments.COUNTERS``): exported to
    ``/metrics`` as they come, and held until flushed into the deployment-wide counts
    (:meth:`app.stores.experiments.ExperimentStore.add`)."""

    def __init__(self) -> None:
        self._totals: dict[str, dict[str, int]] = {}
        self._unflushed: dict[str, dict[str, int]] = {}

    def count(self, arm: str, counter: str) -> None:
        for counts in (self._totals, self._unflushed):
            mine = counts.setdefault(arm, {})
            mine[counter] = mine.get(counter, 0) + 1
        experiment_counts.labels(arm, counter).inc()
        totals = self._totals[arm]
        if counter in ("trials", "hits") and totals.get("trials"):
            experiment_hit_ratio.labels(arm).set(totals.get("hits", 0) / totals["trials"])
        if counter in ("served", "answered") and totals.get("served"):
            experiment_click_through.labels(arm).set(totals.get("answered", 0) / totals["served"])

    def take(self) -> dict[str, dict[str, int]]:
        """The counts since the last call."""
        taken, self._unflushed = self._unflushed, {}
        return taken

    def put_back(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Counts taken but not stored (Redis failed): kept for the next flush."""
        for arm, theirs in counts.items():
            mine = self._unflushed.setdefault(arm, {})
            for counter, value in theirs.items():
                mine[counter] = mine.get(counter, 0) + value


def set_consumer_lag(lag: Mapping[tuple[str, int], int]) -> None:
    """Replace the lag figures: partitions this worker no longer owns disappear."""
    consumer_lag.clear()
    for (topic, partition), records in lag.items():
        consumer_lag.labels(topic, str(partition)).set(records)


def action_label(action: str, configured: Collection[str]) -> str:
    """The ``action`` label of an event: its action when configured (or ``impression``), else
    ``other``. A label never takes a client's string: each new one is a series in every worker
    and in Prometheus."""
    return action if action in configured or action == IMPRESSION else OTHER_ACTION
