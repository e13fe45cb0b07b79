"""Streaming evaluation through a running worker, and the reports of both modes.

The in-process mode replays an events file with :func:`app.evaluation.streaming.simulate`
(:func:`in_process_report`). The pipeline mode (:func:`pipeline_report`) replays through a
running worker instead (:func:`replay_pipeline`): it feeds the warm-up, has the trainer fit on
exactly it, then posts the first ``limit`` stream events to ``POST /events`` with their
original timestamps; before each probe it reads the product's list from ``GET /recommend`` and
the popular items from the worker's Redis popularity set. It then simulates the same slice in
process and reports both and how well they agree. The worker must be new (its own app id,
topics and Redis prefix, no events yet), and the replay must run with the worker's settings.
``bench/streaming_pipeline.py`` starts such a worker; ``python -m app streaming-eval``
(:mod:`app.evaluation.commands`) runs either mode. See docs/EVALUATION.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import islice

import aiohttp

from app.datasets import Event, event_json
from app.evaluation import streaming as prequential
from app.evaluation.streaming import K, Outcome, Stream
from app.ops.progress import Progress
from app.retraining import RetrainPolicy, als_params
from app.settings import Settings
from app.stores import Stores
from app.stores.model import ModelStore, decode_model, version_sequence

BATCH = 1000  # events per POST, the worker's default limit
SETTLE = 0.05  # seconds past a fold-in tick for its Redis writes to land
WAIT_LIMIT = 30.0  # seconds an event may take to show before the replay gives up
WARMUP_PATIENCE = 900.0  # the warm-up may sit in Kafka for minutes before the agent gets to it
FIRST_CHECKS = 2.5
"""Seconds a new worker gets before the warm-up, so its first Redis check (``app.redis_recovery``,
every second) has created the epoch token before any popularity is written."""


async def post_events(http: aiohttp.ClientSession, url: str, events: Sequence[Event]) -> None:
    """Post events in batches; raises unless every batch is accepted."""
    iterator = iter(events)
    while chunk := list(islice(iterator, BATCH)):
        body = {"events": [event_json(event) for event in chunk]}
        async with http.post(f"{url}/events", json=body) as response:
            if response.status != 202:
                raise RuntimeError(f"POST /events: {response.status} {await response.text()}")


async def wait_applied(
    http: aiohttp.ClientSession, url: str, counts: dict[str, int], patience: float = WAIT_LIMIT
) -> dict[str, float]:
    """Poll ``GET /users/{id}`` until each user's event count is reached; when each was seen.

    Gives up when a user's count has not moved for ``patience`` seconds."""
    seen_at: dict[str, float] = {}
    for user_id, count in counts.items():
        last, deadline = -1, time.monotonic() + patience
        while True:
            async with http.get(f"{url}/users/{user_id}") as response:
                body = await response.json()
            applied = body["event_count"] if response.status == 200 else 0
            if applied > count:
                raise RuntimeError(f"{user_id} has {applied} events, not {count}")
            if applied == count:
                seen_at[user_id] = time.time()
                break
            if applied != last:
                last, deadline = applied, time.monotonic() + patience
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{user_id}: stuck at {applied} of {count} events")
            await asyncio.sleep(0.005 if applied else 0.05)
    return seen_at


async def fit_on_what_was_fed(
    http: aiohttp.ClientSession, url: str, models: ModelStore, events: int
) -> str:
    """Ask the trainer for full fits (``POST /admin/retrain``) until it publishes one that saw
    ``events`` events, then wait until the worker at ``url`` serves it or a later one; the
    version served."""
    deadline = time.monotonic() + 10 * WAIT_LIMIT
    seen = await models.snapshot_version()
    while True:
        async with http.post(f"{url}/admin/retrain") as response:
            if response.status != 202:
                raise RuntimeError(f"POST /admin/retrain: {response.status}")
        while (version := await models.snapshot_version()) == seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no model fitted on {events} events at {url}")
            await asyncio.sleep(0.2)
        seen = version
        blob = await models.load(version)
        if blob is not None:
            _, meta = await asyncio.to_thread(decode_model, blob)
            if meta["metrics"].get("events") == events:
                break
    while True:
        async with http.get(f"{url}/health") as response:
            served = (await response.json())["model_version"]
        # A later version (a fit already under way when this one was asked for) saw the same
        # events: nothing more is fed meanwhile.
        if served is not None and version_sequence(served) >= version_sequence(version):
            return served
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} does not serve model {version}")
        await asyncio.sleep(0.1)


async def replay_through_worker(
    stream: Stream,
    limit: int,
    url: str,
    stores: Stores,
    worker_settings: Settings,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Replay the first ``limit`` stream events through a prepared worker; every probe's
    ``product`` list (``GET /recommend``) and ``popularity`` list (its Redis set).

    Events between two probes go in one request. Before a probe, every event sent so far must
    show: each user's event count (``GET /users``); then a fold-in tick plus :data:`SETTLE`
    passes, so the tick after the last event has written the popularity; and the probed
    user's list must reflect all their events (its ``event_count``).
    """
    progress = progress or Progress.silent()
    probes = set(prequential.find_probes(stream, worker_settings.weight, limit))
    rows: dict[str, set[str]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for event in stream.warmup:
        rows[event.user_id].add(event.item_id)
        counts[event.user_id] += 1
    outcomes: list[Outcome] = []
    pending: list[Event] = []
    tick = worker_settings.fold_in_interval + SETTLE
    half_life = worker_settings.popularity_half_life
    async with aiohttp.ClientSession() as http:

        async def flush() -> None:
            if not pending:
                return
            touched = {event.user_id: counts[event.user_id] for event in pending}
            await post_events(http, url, pending)
            applied = await wait_applied(http, url, touched)
            pending.clear()
            await asyncio.sleep(max(0.0, max(applied.values()) + tick - time.time()))

        async def product_list(user_id: str) -> list[str]:
            deadline = time.monotonic() + WAIT_LIMIT
            while True:
                async with http.get(f"{url}/recommend/{user_id}?n={K}") as response:
                    body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"GET /recommend/{user_id}: {response.status} {body}")
                if body["event_count"] == counts[user_id]:
                    return [entry["item_id"] for entry in body["items"]]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{user_id}: list not refreshed in {WAIT_LIMIT} s")
                await asyncio.sleep(0.01)

        replayed = stream.replay[:limit]
        for position, event in enumerate(
            progress.bar("pipeline replay", len(replayed), "event", replayed)
        ):
            if position in probes:
                await flush()
                seen = rows[event.user_id]
                ranked = await stores.popularity.top(len(seen) + K, half_life)
                popular = [item for item, _ in ranked if item not in seen][:K]
                lists = {"product": await product_list(event.user_id), "popularity": popular}
                # Whether the worker's model knows the item is not exposed: None.
                outcomes.append(
                    Outcome(position, event.user_id, event.item_id, event.timestamp, lists, None)
                )
                if len(outcomes) % 50 == 0:
                    progress(f"pipeline: {position + 1} events replayed, {len(outcomes)} probes")
            pending.append(event)
            rows[event.user_id].add(event.item_id)
            counts[event.user_id] += 1
        await flush()
    return outcomes


async def replay_pipeline(
    stream: Stream,
    limit: int,
    url: str,
    stores: Stores,
    worker_settings: Settings,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Feed the warm-up to a new worker, fit on it, delete the lists, replay ``limit`` events.

    ``stores``: the worker's (on its Redis, under its prefix)."""
    progress = progress or Progress.silent()
    counts = Counter(event.user_id for event in stream.warmup)
    await asyncio.sleep(FIRST_CHECKS)
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        await post_events(http, url, stream.warmup)
        await wait_applied(http, url, dict(counts), patience=WARMUP_PATIENCE)
        progress(
            f"pipeline: warm-up of {len(stream.warmup)} events applied in "
            f"{time.perf_counter() - started:.1f} s"
        )
        version = await fit_on_what_was_fed(http, url, stores.models, len(stream.warmup))
        progress(f"pipeline: serving model {version}, fitted on the warm-up")
    await asyncio.sleep(worker_settings.fold_in_interval + SETTLE)
    await stores.lists.delete_all()
    return await replay_through_worker(stream, limit, url, stores, worker_settings, progress)


def compare(
    pipeline: Sequence[Outcome], simulated: prequential.Run
) -> dict[str, dict[str, float | int]]:
    """Per pipeline variant: how well the worker's lists agree with the simulation's."""
    return {
        variant: prequential.agreement(simulated.outcomes, pipeline, variant)
        for variant in prequential.PIPELINE_VARIANTS
    }


def in_process_report(
    events: Sequence[Event],
    warmup_fraction: float,
    policy: RetrainPolicy,
    limit: int | None,
    run_settings: Settings,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Simulate and summarise; the report the in-process mode prints."""
    progress = progress or Progress.silent()
    started = time.perf_counter()
    stream = prequential.split_stream(events, warmup_fraction)
    progress(
        f"warm-up {len(stream.warmup)} events, stream {len(stream.replay)} events from "
        f"{prequential.day(stream.cut)}"
    )
    run = prequential.simulate(stream, run_settings, policy, limit, progress=progress)
    return {
        "mode": "in-process",
        **describe(run, warmup_fraction, policy, run_settings),
        "summary": prequential.summarize(run.outcomes, prequential.VARIANTS),
        "daily": prequential.daily_series(run.outcomes, prequential.VARIANTS),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def describe(
    run: prequential.Run, warmup_fraction: float, policy: RetrainPolicy, run_settings: Settings
) -> dict[str, object]:
    """The parts of a report that say what was replayed and how."""
    return {
        "warmup_fraction": warmup_fraction,
        "cut": run.stream.cut,
        "warmup_events": len(run.stream.warmup),
        "stream_events": len(run.stream.replay),
        "replayed_events": run.replayed,
        "retrain_policy": dataclasses.asdict(policy),
        "als": dataclasses.asdict(als_params(run_settings)),
        "popularity_half_life": run_settings.popularity_half_life,
        "fits": [dataclasses.asdict(fit) for fit in run.fits],
    }


async def pipeline_report(
    events: Sequence[Event],
    warmup_fraction: float,
    limit: int,
    url: str,
    worker_settings: Settings,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Replay through the worker at ``url`` (run with ``worker_settings``), simulate the same
    slice in process under the same settings, and report both and their agreement."""
    progress = progress or Progress.silent()
    started = time.perf_counter()
    stream = prequential.split_stream(events, warmup_fraction)
    stores = Stores.connect(worker_settings)
    try:
        pipeline = await replay_pipeline(stream, limit, url, stores, worker_settings, progress)
    finally:
        await stores.close()
    replayed = time.perf_counter() - started
    # The trainer's schedule runs on wall time, which a short replay does not reach; its
    # new-item folds run every RECSYS_NEW_ITEM_INTERVAL wall seconds, here stream seconds.
    policy = dataclasses.replace(RetrainPolicy.of(worker_settings), interval=0.0)
    simulated = prequential.simulate(stream, worker_settings, policy, limit)
    return {
        "mode": "pipeline",
        "url": url,
        "pipeline_wall_seconds": round(replayed, 1),
        **describe(simulated, warmup_fraction, policy, worker_settings),
        "pipeline": prequential.summarize(pipeline, prequential.PIPELINE_VARIANTS),
        "in_process": prequential.summarize(simulated.outcomes, prequential.VARIANTS),
        "agreement": compare(pipeline, simulated),
    }
