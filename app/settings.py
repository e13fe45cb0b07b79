"""One settings object, read from the environment (variables prefixed ``RECSYS_``).

Every knob is documented in docs/OPERATIONS.md (Configuration); defaults run a single local
worker against Kafka on 127.0.0.1:9092 and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from types import MappingProxyType
from typing import Any

from dotenv import dotenv_values

from app.actions import IMPRESSION
from app.experiments import Experiment, parse_arms

MAX_ITEMS_PER_USER = 2**16 - 1
"""The changelog encoding counts a user's items in 16 bits (:mod:`app.state_codec`)."""
ENV_FILE = "RECSYS_ENV_FILE"
"""A file of ``RECSYS_<FIELD>=value`` lines (what ``python -m app tune`` writes) read under the
environment: a variable set in both takes the environment's value."""
LOG_FORMATS = ("keyvalue", "json")
POPULARITY_CLOCKS = ("stream", "wall")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
"""The username-and-password mechanisms aiokafka speaks."""

DEFAULT_ACTION_WEIGHTS = {
    "view": 0.5,
    "click": 1.0,
    "purchase": 2.0,
    "return": -2.0,
    "dislike": -1.0,
}
"""A negative action (``return``, ``dislike``) takes the item out of the user's positives
(:func:`app.actions.summed_weight`); ``impression`` has no weight and cannot be given one."""


class SettingsError(ValueError):
    """A RECSYS_ variable that cannot be used; the message names it."""


def parse_weights(text: str) -> Mapping[str, float]:
    """Parse ``"view=0.5,click=1,purchase=2"`` into an action -> weight mapping."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        action, sep, value = part.partition("=")
        action = action.strip()
        if not sep or not action:
            raise SettingsError(f"RECSYS_ACTION_WEIGHTS: expected action=weight, got {part!r}")
        try:
            weights[action] = float(value)
        except ValueError:
            raise SettingsError(
                f"RECSYS_ACTION_WEIGHTS: weight of {action!r} is not a number: {value!r}"
            ) from None
    return MappingProxyType(weights)


def _parse_bool(raw: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "on": True}
    words |= {"0": False, "false": False, "no": False, "off": False}
    if raw.strip().lower() not in words:
        raise ValueError(raw)
    return words[raw.strip().lower()]


@dataclass(frozen=True)
class Settings:
    """Every knob of a worker; each field is read from ``RECSYS_<FIELD>``."""

    app_id: str = "recommender"
    """Faust app id: the consumer group and the changelog topic names."""
    kafka_broker: str = "kafka://127.0.0.1:9092"
    """Kafka bootstrap server(s), Faust's ``kafka://`` form."""
    kafka_security_protocol: str = "PLAINTEXT"
    """How every Kafka client of the product connects (``app.kafka_clients``): ``PLAINTEXT``,
    ``SSL`` (TLS), ``SASL_PLAINTEXT`` or ``SASL_SSL`` (a username and password over TLS)."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    """With SASL: ``SCRAM-SHA-512``, ``SCRAM-SHA-256`` or ``PLAIN``."""
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    """With TLS: the PEM file of the CA(s) that signed the brokers' certificates; empty: the
    system's trusted CAs (a managed Kafka with a public certificate)."""
    kafka_ssl_certfile: str = ""
    """With TLS, when the brokers ask for a client certificate: its PEM file (with the key in
    it, or in ``kafka_ssl_keyfile``)."""
    kafka_ssl_keyfile: str = ""
    """The client certificate's unencrypted private key, when not in ``kafka_ssl_certfile``."""
    topic_replication_factor: int = 1
    """Replicas of every topic the product or Faust creates for it; 1 for one local broker, 3
    on a production cluster. Applies when a topic is created: existing topics keep theirs."""
    topic_min_insync_replicas: int = 1
    """``min.insync.replicas`` of those topics: the replicas that must have a record before the
    broker acknowledges it to the product's producers (``acks=all``); 2 with a factor of 3."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "recsys"
    """Namespace of every Redis key (``app.stores.keys``)."""
    events_topic: str = "user-actions"
    dead_letter_topic: str = "user-actions-dlq"
    items_topic: str = "items"
    events_retention_ms: int = -1
    """Retention of the raw events topic; -1 keeps it forever, for replays."""
    partitions: int = 8
    """Partitions of the topics and tables; fixed once the topics exist."""
    store: str = "rocksdb://"
    """Faust table store; ``memory://`` replays the whole changelog on every start."""
    table_memory_mib: int = 64
    """RocksDB memory per table partition a worker holds: a block cache of half of it and two
    write buffers of a quarter each. Faust's defaults (a 2 GiB cache and three 64 MiB buffers
    per partition) let a worker of 8 partitions grow towards 17 GiB; the soak saw it climb by
    about 30 MiB a minute."""
    data_dir: str = ".data/worker"
    web_host: str = "127.0.0.1"
    """The worker's web address as other workers reach it."""
    web_bind: str = ""
    """The interface to listen on; empty: the web host."""
    web_port: int = 6066
    demo_events: str = "data/sample-events.csv"
    """The history the demo page's Play button replays (``/demo/play``), from the working
    directory; the bundled sample by default."""
    action_weights: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict(DEFAULT_ACTION_WEIGHTS))
    )
    """Weight each action adds to a user-item interaction (``view=0.5,click=1,...``)."""
    default_weight: float = 0.1
    """Weight of an action not in ``action_weights``."""
    batch_events: int = 1000
    """Most ``user-actions`` messages the agent applies in one batch (one state write per
    user per batch)."""
    batch_wait: float = 0.05
    """Seconds the agent waits to fill a batch before applying what it has: longer batches
    cost fewer writes and changelog records per event, and add up to this much latency."""
    fold_in_interval: float = 0.2
    """A touched user's list is refreshed at once; this is the wait between ticks when nobody
    was touched (for lists served from an older model) and before a retry when Redis failed."""
    retrain_interval: float = 3600.0
    """Seconds between scheduled full fits (0: none on a clock)."""
    retrain_growth: float = 1.0
    """Also refit once new events reach this multiple of the model's (0: off)."""
    new_item_interval: float = 2.0
    """Seconds between folds of new items into the published model (0: off)."""
    run_trainer: bool = True
    """Start a (standby) trainer process beside this worker."""
    gc_freeze: bool = True
    """Take the start-up objects out of the cyclic garbage collector once up."""
    gc_young_threshold: int = 50_000
    """Allocations between two young-generation passes of the cyclic garbage collector (Python's
    default: 700), set with the start-up freeze (``gc_freeze``). Each list refresh allocates
    about 100 pairs a user, so the default ran about 200 passes a second and a full one every
    half second."""
    refresh_batch: int = 200
    """Users per tick re-ranked because a list served from Redis came from an older model."""
    refresh_slice: int = 32
    """Users whose lists are computed between two yields to the event loop: the longest the
    refresher holds the loop (about 0.1 ms a user with exact search over a few thousand items)."""
    als_factors: int = 64
    als_regularization: float = 0.05
    als_alpha: float = 1.0
    """Confidence is ``alpha * summed weight``."""
    als_iterations: int = 15
    als_threads: int = 1
    """Threads of a full fit in the trainer (0: all cores)."""
    check_pairs: int = 2000
    """Newest first interactions of a user with an item (that the serving model was not fitted
    on) held out of a full fit, to score the candidate against the serving model before it
    goes live (``app.model_check``; 0: publish every fit unchecked)."""
    check_min_users: int = 100
    """Fewest users with held-out interactions for the check; with fewer, too few to judge,
    the fit is published unchecked (and the log says so)."""
    check_margin: float = 0.1
    """A candidate is refused when its held-out HR@10 or NDCG@10 is below the serving model's
    by more than this share of it."""
    rollback_min_trials: int = 500
    """Live test-then-learn trials (positive events of users whose top 10 a model ranked) the
    newest model and the one before each need before the trainer compares them (0: never roll
    back automatically)."""
    rollback_margin: float = 0.2
    """The trainer rolls the newest model back when its live HR@10 is below the previous
    model's by more than this share of it."""
    ann_min_items: int = 200_000
    """Catalogue size from which ranking searches an HNSW index instead of every item
    (docs/CANDIDATE_SEARCH.md); below it, ranking is exact. Also the number of users from
    which the similar-users search uses one."""
    user_neighbours: bool = True
    """The trainer publishes each full fit's user factors (4 bytes a factor a user, in Redis)
    for ``GET /users/{id}/similar``; off, that endpoint answers 404."""
    cache_size: int = 100
    """Length of each cached list, and the largest ``n`` a read may ask for."""
    cache_ttl: int = 7 * 24 * 3600
    """Seconds a cached list lives without updates."""
    popularity_half_life: float = 7 * 24 * 3600.0
    """Half-life of the cold-start popularity, seconds."""
    popularity_clock: str = "stream"
    """What popularity's weights decay against: ``stream``, the newest event time seen, so a
    replayed history trends as it did when it happened; or ``wall``, the worker's clock. The
    ranking is the same under both; the weights shown and served differ."""
    trending_half_lives: str = "3600,86400"
    """Further half-lives ``/popular?half_life=`` offers, comma-separated seconds."""
    max_events_per_request: int = 1000
    max_items_per_request: int = 1000
    impression_limit: int = 3
    """Showings of an item (``impression`` actions) without an action on it after which the
    item goes after every other candidate in that user's lists; 0 turns demotion off."""
    max_items_per_user: int = 100
    """Items a user's state keeps; beyond it the least recently used go (1 to 65,535).

    Bounds the changelog record (about 18 bytes per item, so under 2 KB). 100 keeps every item
    of 82% of Online Retail's customers (median 35 distinct items, p90 142). Recency rather
    than weight decides, since it needs no decay parameter and keeps what the user does now.
    A dropped item no longer counts in the user's row (fold-in, training) and is no longer
    filtered out of their recommendations, so it may be recommended again.
    """
    content_max_events: int = 3
    """Users with at most this many events get content-based lists."""
    content_weight: float = 0.7
    """Share of content similarity in those lists; the rest is popularity."""
    experiment_arms: str = ""
    """Arms of a live experiment, ``name:share[:fold_in=off]`` comma-separated
    (``app.experiments``); empty: one arm, ``default``, every user served alike."""
    experiment_name: str = "experiment"
    """Salt of the arm assignment: a new name deals users into arms afresh."""
    max_body_bytes: int = 1024 * 1024
    max_id_length: int = 256
    max_future_skew: float = 24 * 3600.0
    """How far in the future an event's timestamp may be, seconds."""
    produce_timeout: float = 10.0
    """Seconds to wait for Kafka's acknowledgement before answering 503."""
    session_timeout: float = 10.0
    """Seconds before Kafka gives a killed worker's partitions to another."""
    body_read_timeout: float = 10.0
    """Seconds a client has to send its request body before 408."""
    log_format: str = "keyvalue"
    """Worker log lines: ``keyvalue`` (``ts=... level=... msg="..."``) or ``json`` (one JSON
    object a line, for a log shipper)."""
    api_key: str = field(default="", repr=False)
    """When set, writes and admin endpoints need it."""
    api_key_for_reads: bool = False
    """Also require the key for the public reads (the probes stay open)."""

    def weight(self, action: str) -> float:
        """The weight an action adds to a user-item interaction."""
        return self.action_weights.get(action, self.default_weight)

    @property
    def bootstrap_servers(self) -> str:
        """The broker address for clients that take it without Faust's ``kafka://`` scheme."""
        return self.kafka_broker.removeprefix("kafka://")

    @property
    def kafka_sasl(self) -> bool:
        """Whether the Kafka clients authenticate with a username and password."""
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def kafka_tls(self) -> bool:
        """Whether the Kafka clients connect over TLS."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def web_url(self) -> str:
        """The worker's address as a client reaches it (its web host and port)."""
        return f"http://{self.web_host}:{self.web_port}"

    @cached_property
    def experiment(self) -> Experiment:
        """The arms users are dealt into (one, ``default``, without an experiment)."""
        return parse_arms(self.experiment_arms, self.experiment_name)

    @property
    def half_lives(self) -> tuple[float, ...]:
        """Every popularity half-life kept: the cold-start one first, then the trending ones."""
        extra = (float(part) for part in self.trending_half_lives.split(",") if part.strip())
        return tuple(dict.fromkeys((self.popularity_half_life, *extra)))

    def validate(self) -> None:
        """Refuse values out of range, naming the variable; called once at start-up."""
        if self.max_items_per_user > MAX_ITEMS_PER_USER:
            raise SettingsError(
                f"RECSYS_MAX_ITEMS_PER_USER: must be at most {MAX_ITEMS_PER_USER}, "
                f"got {self.max_items_per_user}"
            )
        if IMPRESSION in self.action_weights:
            raise SettingsError(
                f"RECSYS_ACTION_WEIGHTS: {IMPRESSION!r} takes no weight: it counts showings"
            )
        for name, low in _AT_LEAST.items():
            if getattr(self, name) < low:
                raise SettingsError(
                    f"RECSYS_{name.upper()}: must be at least {low:g}, got {getattr(self, name)}"
                )
        for name in ("content_weight", "check_margin", "rollback_margin"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingsError(
                    f"RECSYS_{name.upper()}: must be within [0, 1], got {getattr(self, name)}"
                )
        if self.events_retention_ms < 0 and self.events_retention_ms != -1:
            raise SettingsError(
                "RECSYS_EVENTS_RETENTION_MS: must be -1 (forever) or at least 0, "
                f"got {self.events_retention_ms}"
            )
        try:
            half_lives = self.half_lives
        except ValueError:
            raise SettingsError(
                "RECSYS_TRENDING_HALF_LIVES: expected comma-separated seconds, "
                f"got {self.trending_half_lives!r}"
            ) from None
        if any(half_life <= 0 for half_life in half_lives):
            raise SettingsError("RECSYS_TRENDING_HALF_LIVES: every half-life must be positive")
        if self.popularity_clock not in POPULARITY_CLOCKS:
            raise SettingsError(
                f"RECSYS_POPULARITY_CLOCK: must be one of {', '.join(POPULARITY_CLOCKS)}, "
                f"got {self.popularity_clock!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"RECSYS_LOG_FORMAT: must be one of {', '.join(LOG_FORMATS)}, "
                f"got {self.log_format!r}"
            )
        try:
            self.experiment  # noqa: B018 - parsed here to refuse it at start-up
        except ValueError as error:
            raise SettingsError(f"RECSYS_EXPERIMENT_ARMS: {error}") from None
        if self.experiment.batch_arms and not self.user_neighbours:
            raise SettingsError(
                "RECSYS_EXPERIMENT_ARMS: an arm with fold_in=off serves the user factors of the "
                "last full fit, which RECSYS_USER_NEIGHBOURS=false keeps the trainer from "
                "publishing"
            )
        if not self.kafka_broker.startswith("kafka://"):
            raise SettingsError(
                f"RECSYS_KAFKA_BROKER: expected kafka://host:port, got {self.kafka_broker!r}"
            )
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise SettingsError(
                "RECSYS_TOPIC_MIN_INSYNC_REPLICAS: must be at most "
                f"RECSYS_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}), got "
                f"{self.topic_min_insync_replicas}: no write could ever be acknowledged"
            )
        self._validate_kafka_security()

    def _validate_kafka_security(self) -> None:
        """Refuse a security setting that would be ignored or could not connect: a username
        without SASL would otherwise connect in the clear, unnoticed."""
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                "RECSYS_KAFKA_SECURITY_PROTOCOL: must be one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {protocol!r}"
            )
        sasl = {
            "RECSYS_KAFKA_USERNAME": self.kafka_username,
            "RECSYS_KAFKA_PASSWORD": self.kafka_password,
        }
        tls = {
            "RECSYS_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "RECSYS_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "RECSYS_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        for wanted, names, values in (
            (self.kafka_sasl, "SASL_PLAINTEXT or SASL_SSL", sasl),
            (self.kafka_tls, "SSL or SASL_SSL", tls),
        ):
            unused = [name for name, value in values.items() if value and not wanted]
            if unused:
                raise SettingsError(
                    f"{unused[0]}: only used with RECSYS_KAFKA_SECURITY_PROTOCOL={names}, "
                    f"got {protocol}"
                )
        if self.kafka_sasl:
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise SettingsError(
                    "RECSYS_KAFKA_SASL_MECHANISM: must be one of "
                    f"{', '.join(KAFKA_SASL_MECHANISMS)}, got {self.kafka_sasl_mechanism!r}"
                )
            missing = [name for name, value in sasl.items() if not value]
            if missing:
                raise SettingsError(f"{missing[0]}: required with {protocol}")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise SettingsError(
                "RECSYS_KAFKA_SSL_KEYFILE: the key of a client certificate, which "
                "RECSYS_KAFKA_SSL_CERTFILE does not name"
            )
        for name, path in tls.items():
            if path and not os.path.isfile(path):
                raise SettingsError(f"{name}: no such file {path!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``RECSYS_<FIELD>`` variables, then the lines of the file named by
        ``RECSYS_ENV_FILE``; unset ones keep their default."""
        environ = os.environ if environ is None else environ
        if environ.get(ENV_FILE):
            environ = {**read_env_file(environ[ENV_FILE]), **environ}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = f"RECSYS_{spec.name.upper()}"
            if name not in environ:
                continue
            raw = environ[name]
            if spec.name == "action_weights":
                values[spec.name] = parse_weights(raw)
                continue
            kind = type(getattr(DEFAULTS, spec.name))
            try:
                values[spec.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError:
                raise SettingsError(f"{name}: expected {kind.__name__}, got {raw!r}") from None
        return cls(**values)


DEFAULTS = Settings()
VARIABLES = frozenset(f"RECSYS_{spec.name.upper()}" for spec in fields(Settings))
"""The name of every setting's environment variable."""


def read_env_file(path: str) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file (comments and ``export`` allowed), each naming a
    setting: a misspelt name would otherwise leave its setting at the default unnoticed."""
    if not os.path.isfile(path):
        raise SettingsError(f"{ENV_FILE}: no such file {path!r}")
    values = dotenv_values(path)
    for name, value in values.items():
        if name not in VARIABLES:
            raise SettingsError(f"{ENV_FILE}: {path} sets {name}, which is not a setting")
        if value is None:
            raise SettingsError(f"{ENV_FILE}: {path} names {name} without a value")
    return dict(values)


_AT_LEAST: Mapping[str, float] = MappingProxyType(
    {
        "partitions": 1,
        "topic_replication_factor": 1,
        "topic_min_insync_replicas": 1,
        "web_port": 1,
        "batch_events": 1,
        "batch_wait": 0.001,
        "fold_in_interval": 0.001,
        "retrain_interval": 0,
        "retrain_growth": 0,
        "new_item_interval": 0,
        "refresh_batch": 1,
        "refresh_slice": 1,
        "gc_young_threshold": 1,
        "als_factors": 1,
        "als_regularization": 0,
        "als_alpha": 0,
        "als_iterations": 1,
        "als_threads": 0,
        "check_pairs": 0,
        "check_min_users": 1,
        "rollback_min_trials": 0,
        "ann_min_items": 1,
        "cache_size": 1,
        "cache_ttl": 1,
        "popularity_half_life": 1,
        "max_events_per_request": 1,
        "max_items_per_request": 1,
        "max_items_per_user": 1,
        "impression_limit": 0,
        "table_memory_mib": 4,
        "content_max_events": 0,
        "max_body_bytes": 1,
        "max_id_length": 1,
        "max_future_skew": 0,
        "produce_timeout": 0.001,
        "session_timeout": 1,
        "body_read_timeout": 0.001,
    }
)
"""The least value of each numeric setting that has one."""
