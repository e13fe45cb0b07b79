"""A worker's timers and tasks: what runs beside the stream agents, on a clock.

Each job calls one method of the piece that owns the behaviour and, when Redis or Kafka is
away, logs and waits for its next turn instead of crashing the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from app import trainer
from app.ops import metrics
from app.ops.consumer_lag import ConsumerLag
from app.ops.startup import StartupObjects

if TYPE_CHECKING:
    from app.factory import Product

log = logging.getLogger(__name__)

MODEL_SYNC_INTERVAL = 1.0
REDIS_CHECK_INTERVAL = 1.0
LAG_CHECK_INTERVAL = 2.0
CATCH_UP_CHECK_INTERVAL = 1.0


def _postponed_on(
    errors: tuple[type[BaseException], ...], what: str, job: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[None]]:
    """The job, logging and skipping its turn when one of ``errors`` is raised."""

    async def run() -> None:
        try:
            await job()
        except errors as error:
            log.warning("%s postponed: %s", what, error)

    run.__name__ = run.__qualname__ = job.__name__
    return run


def add_jobs(product: Product) -> None:
    """Register the worker's timers and tasks on the product's Faust app."""
    app, settings = product.faust, product.settings
    refresher, recovery = product.refresher, product.recovery
    redis_errors = (RedisError, OSError)
    startup_objects = StartupObjects(settings.gc_young_threshold)
    consumer_lag = ConsumerLag(settings, {settings.events_topic, settings.items_topic})

    async def declare_topics() -> None:
        """Create the topics the worker writes to but does not consume (the dead letters)."""
        for topic in product.topics.all:
            await topic.maybe_declare()

    async def refresh_touched_users() -> None:
        await refresher.refresh_continuously()

    async def follow_published_model() -> None:
        """Serve the trainer's current model and the current catalogue on every worker,
        within a second of publication; then freeze the start-up objects once."""
        await refresher.sync_model()
        await refresher.sync_catalogue()
        if settings.gc_freeze:
            startup_objects.freeze()

    async def watch_redis() -> None:
        await recovery.check()

    async def fit_after_replay() -> None:
        await product.catch_up.check()

    async def measure_consumer_lag() -> None:
        metrics.set_consumer_lag(await consumer_lag.measure(app.consumer.assignment()))

    async def close_consumer_lag(_app: Any, **_signal: Any) -> None:
        await consumer_lag.close()

    async def supervise_trainer() -> None:
        if settings.run_trainer:
            await trainer.supervise()

    app.task(declare_topics)
    app.task(supervise_trainer)
    app.task(refresh_touched_users)
    for interval, job, what in (
        (MODEL_SYNC_INTERVAL, follow_published_model, "model check"),
        (REDIS_CHECK_INTERVAL, watch_redis, "Redis check"),
        (CATCH_UP_CHECK_INTERVAL, fit_after_replay, "replay catch-up check"),
    ):
        app.timer(interval)(_postponed_on(redis_errors, f"{what}, Redis unavailable", job))
    app.timer(LAG_CHECK_INTERVAL)(
        _postponed_on((KafkaError,), "consumer lag, Kafka unavailable", measure_consumer_lag)
    )
    app.on_before_shutdown.connect(close_consumer_lag)
