"""One settings object, read from the environment (variables prefixed ``RECSYS_``).

Every knob is documented in the README's Configuration section; defaults run a single local
worker against Kafka on 127.0.0.1:9092 and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

DEFAULT_ACTION_WEIGHTS = {"view": 0.5, "click": 1.0, "purchase": 2.0, "return": -2.0}
"""A ``return`` cancels a purchase: a purchase then a return of the same item sums to zero."""


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
    app_id: str = "recommender"
    kafka_broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "recsys"
    events_topic: str = "user-actions"
    dead_letter_topic: str = "user-actions-dlq"
    items_topic: str = "items"
    events_retention_ms: int = -1
    partitions: int = 8
    store: str = "rocksdb://"
    data_dir: str = ".data/worker"
    web_host: str = "127.0.0.1"
    web_bind: str = ""
    web_port: int = 6066
    action_weights: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict(DEFAULT_ACTION_WEIGHTS))
    )
    default_weight: float = 0.1
    fold_in_interval: float = 0.2
    retrain_interval: float = 3600.0
    retrain_growth: float = 1.0
    new_item_interval: float = 2.0
    run_trainer: bool = True
    gc_freeze: bool = True
    refresh_batch: int = 200
    als_factors: int = 64
    als_regularization: float = 0.05
    als_alpha: float = 1.0
    als_iterations: int = 15
    als_threads: int = 1
    cache_size: int = 100
    cache_ttl: int = 7 * 24 * 3600
    popularity_half_life: float = 7 * 24 * 3600.0
    trending_half_lives: str = "3600,86400"
    max_events_per_request: int = 1000
    max_items_per_request: int = 1000
    content_max_events: int = 3
    content_weight: float = 0.7
    max_body_bytes: int = 1024 * 1024
    max_id_length: int = 256
    max_future_skew: float = 24 * 3600.0
    produce_timeout: float = 10.0
    session_timeout: float = 10.0
    body_read_timeout: float = 10.0
    api_key: str = field(default="", repr=False)
    api_key_for_reads: bool = False

    def weight(self, action: str) -> float:
        """The weight an action adds to a user-item interaction."""
        return self.action_weights.get(action, self.default_weight)

    @property
    def bootstrap_servers(self) -> str:
        """The broker address for clients that take it without Faust's ``kafka://`` scheme."""
        return self.kafka_broker.removeprefix("kafka://")

    @property
    def half_lives(self) -> tuple[float, ...]:
        """Every popularity half-life kept: the cold-start one first, then the trending ones."""
        extra = (float(part) for part in self.trending_half_lives.split(",") if part.strip())
        return tuple(dict.fromkeys((self.popularity_half_life, *extra)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``RECSYS_<FIELD>`` variables; unset ones keep their default."""
        environ = os.environ if environ is None else environ
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
