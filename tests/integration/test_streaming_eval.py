"""Streaming evaluation through a real worker: the pipeline replay agrees with the in-process
simulation."""

from __future__ import annotations

import dataclasses

from redis.asyncio import Redis

from app.datasets import read_events
from app.evaluation.pipeline import replay_pipeline
from app.evaluation.streaming import agreement, simulate, split_stream
from app.retraining import RetrainPolicy
from app.settings import Settings
from app.stores import Stores
from harness.data import SAMPLE_EVENTS, STREAMING_REPLAY_LIMIT
from harness.services import REDIS_URL
from harness.worker import running_worker, worker_env

MIN_SAME_TOP10 = 0.95  # see test_the_pipeline_replay_agrees_with_the_in_process_simulation


async def test_the_pipeline_replay_agrees_with_the_in_process_simulation(tmp_path):
    """The same slice replayed through HTTP -> Kafka -> agent -> table -> Redis -> HTTP and in
    process gives the same top 10s, up to ALS fit noise.

    The trainer fits once on exactly the warm-up (a retrain is requested after it is applied,
    and the lists cached before are deleted), as the simulation does. A 400-event replay
    reaches neither the growth nor the wall-clock refit, and new-item folds are off on both
    sides (they run on wall time in the worker and on stream time in the simulation). What is
    left is the order of the rows in the fit (changelog order in the trainer, first-seen order
    here), which moves implicit's random start; refitting in process with the users in reverse
    order changes none of these 303 top 10s (tests/unit/test_streaming_eval.py). The worker's
    model also travels as float32 factors through Redis. So at least 95% of the probes must get
    the same top 10 (as a set), the same hit or miss, and the popularity lists, which involve no
    fit, too.
    """
    events = read_events(SAMPLE_EVENTS)
    stream = split_stream(events, 0.8)
    env = worker_env(
        tmp_path,
        RECSYS_FOLD_IN_INTERVAL="0.05",
        RECSYS_NEW_ITEM_INTERVAL="1e9",
        RECSYS_ALS_FACTORS="16",
        RECSYS_ALS_ITERATIONS="15",
        RECSYS_MAX_ITEMS_PER_USER="65535",  # the simulation keeps every item of a user
    )
    settings = Settings.from_env(env)
    redis = Redis.from_url(REDIS_URL)
    log_path = tmp_path / "worker.log"
    try:
        with running_worker(env, log_path) as worker:
            pipeline = await replay_pipeline(
                stream, STREAMING_REPLAY_LIMIT, worker.url, Stores.of(redis, settings), settings
            )
    finally:
        async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
    policy = dataclasses.replace(RetrainPolicy.of(settings), interval=0.0)
    simulated = simulate(stream, settings, policy, STREAMING_REPLAY_LIMIT)
    assert [fit.reason for fit in simulated.fits] == ["warm-up"]
    assert len(pipeline) == len(simulated.outcomes) >= 300
    product = agreement(simulated.outcomes, pipeline, "product")
    popularity = agreement(simulated.outcomes, pipeline, "popularity")
    failure = (product, popularity, log_path.read_text(errors="replace")[-3000:])
    assert product["same_top10"] >= MIN_SAME_TOP10, failure
    assert product["same_hit"] >= MIN_SAME_TOP10, failure
    assert popularity["same_top10"] >= MIN_SAME_TOP10, failure
