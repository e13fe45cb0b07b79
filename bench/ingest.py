"""Ingest: the pipeline's rate against a bare Faust agent's in the same run, changelog bytes per
event; then, on the data that is in, memory, the trainer's full fit and the HTTP path.

1. **Kafka, against the ceiling**: the Online Retail events (406,829 with original timestamps,
   or the first ``--limit``) are produced with aiokafka to a fresh 8-partition topic, keyed by
   user as the README asks. That backlog is drained first by a Faust agent with an empty body
   (bench/bare_agent.py, its own consumer group), then by a worker started on it. Each rate runs
   from the first applied event to the last (the worker's from ``/metrics``, polled every
   250 ms); the ratio of the two is the issue's target (at least 0.7).
2. **Changelog bytes per event**: the ``user-state`` changelog is read back, and the bytes of
   its records (key and value) are divided by the events applied, against the bytes of a raw
   event as produced (key and value).
3. **Memory** (with the trainer): the worker's and the trainer's RSS, Redis bytes per cached
   list (``MEMORY USAGE``) and ``used_memory``.
4. **Fit in the pipeline** (with the trainer): ``POST /admin/retrain``; the trainer's
   ``fit_seconds`` as published with the model, against a bare implicit fit of the same matrix.
5. **HTTP**: wrk posts ``{"events": [...]}`` batches of random views (100k users, 10k items)
   for ``--http-seconds`` with ``--connections`` connections (bench/ingest.lua); the applied
   rate is the events sent divided by the time until the last is applied (one marker user per
   partition, posted last, polled on ``GET /users``).

wrk is the Debian package ``wrk`` (``apt-get install -y wrk``). Usage:

    .venv/bin/python bench/ingest.py                                   # everything
    .venv/bin/python bench/ingest.py --no-trainer --http-seconds 0     # 1 and 2 only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import aiohttp
import numpy as np
import orjson
from _support import (
    RESULTS,
    children,
    log_path,
    machine,
    own_settings,
    produce_backlog,
    rss_bytes,
    run_wrk,
    write_report,
)
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis

from app import ranker
from app.datasets import read_events
from app.evaluation.offline import interaction_rows
from app.retraining import als_params
from app.settings import Settings
from app.stores.keys import RedisKeys
from app.stores.model import ModelStore, decode_model
from app.tables import changelog_topic
from harness.http import get_metric
from harness.services import KAFKA_BOOTSTRAP, REDIS_URL
from harness.worker import WorkerProcess, create_topics

DATA = "/work/shared/datasets/online-retail/online_retail.csv.gz"
LUA = Path(__file__).with_name("ingest.lua")
BARE_AGENT = Path(__file__).with_name("bare_agent.py")
PARTITIONS = 8
POLL = 0.25
"""Seconds between two reads of the worker's ``/metrics`` while it drains: each read renders
every metric on the worker's loop, and at 50 ms the polling took about 5% of it (py-spy),
which the bare agent, timed from its own events, does not pay."""


def markers(run: str) -> list[str]:
    """One user id per partition of the events topic (murmur2, as the worker places them)."""
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    found: dict[int, str] = {}
    n = 0
    while len(found) < PARTITIONS:
        user = f"marker-{run}-{n}"
        found.setdefault(partitioner(user.encode(), partitions, partitions), user)
        n += 1
    return list(found.values())


async def wait_markers(http: aiohttp.ClientSession, url: str, users: list[str]) -> float:
    """Wait until every marker user's event is applied; the time it was seen."""
    for user in users:
        while True:
            async with http.get(f"{url}/users/{user}") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
    return time.time()


async def post_markers(http: aiohttp.ClientSession, url: str, users: list[str]) -> None:
    body = {"events": [{"user_id": u, "item_id": "marker", "action": "view"} for u in users]}
    async with http.post(f"{url}/events", json=body) as response:
        assert response.status == 202, await response.text()


def post_batches(url: str, seconds: int, connections: int, batch: int) -> dict[str, object]:
    """wrk posting ``batch``-event requests for ``seconds``: its summary and output."""
    summary, out = run_wrk(url, LUA, connections, seconds, {"BATCH": str(batch)})
    return {**summary, "batch": batch, "connections": connections, "wrk_output": out}


async def http_ingest(worker: WorkerProcess, args: argparse.Namespace) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        started = time.time()
        result = await asyncio.to_thread(
            post_batches, worker.url, args.http_seconds, args.connections, args.batch
        )
        sent_done = time.time()
        users = markers("http")
        await post_markers(http, worker.url, users)
        applied = await wait_markers(http, worker.url, users)
    events = result["requests"] * args.batch
    return {
        "path": "HTTP (wrk)",
        "events": events,
        "non_2xx": result["non_2xx"],
        "accepted_per_s": round(events / (sent_done - started)),
        "applied_per_s": round(events / (applied - started)),
        "drain_after_load_s": round(applied - sent_done, 1),
        "request_latency_ms": result["latency_ms"],
        "wrk": {k: v for k, v in result.items() if k != "wrk_output"},
    }


def encoded(events: list) -> list[tuple[bytes, bytes]]:
    """Events as any producer would send them: JSON values keyed by user."""
    return [
        (
            event.user_id.encode(),
            orjson.dumps(
                {
                    "user_id": event.user_id,
                    "item_id": event.item_id,
                    "action": event.action,
                    "timestamp": event.timestamp,
                }
            ),
        )
        for event in events
    ]


def bare_agent_rate(env: dict[str, str], folder: Path, events: int) -> dict[str, object]:
    """The empty-body agent (bench/bare_agent.py) on the same topic, as its own group."""
    result = folder / f"bare-{uuid.uuid4().hex[:6]}.json"
    bare_env = {
        **env,
        "BARE_APP_ID": f"{env['RECSYS_APP_ID']}-bare-{uuid.uuid4().hex[:6]}",
        "BARE_TOPIC": env["RECSYS_EVENTS_TOPIC"],
        "BARE_PARTITIONS": env.get("RECSYS_PARTITIONS", str(PARTITIONS)),
        "BARE_EVENTS": str(events),
        "BARE_BROKER": f"kafka://{KAFKA_BOOTSTRAP}",
        "BARE_DATA_DIR": str(folder / "bare-data"),
        "BARE_RESULT": str(result),
    }
    log = RESULTS / "logs" / f"{result.stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        subprocess.run(
            [sys.executable, str(BARE_AGENT), "worker", "-l", "warn"],
            env=bare_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    if not result.exists():
        raise SystemExit(f"the bare agent wrote no result; see {log}")
    times = json.loads(result.read_text())
    return {"events": events, "per_s": round(events / (times["last"] - times["first"]))}


async def processed(http: aiohttp.ClientSession, url: str) -> float | None:
    """Events the worker has applied so far, or None while its web server is not up."""
    try:
        return await get_metric(http, url, "recsys_events_processed_total")
    except (aiohttp.ClientError, OSError):
        return None


async def pipeline_rate(worker: WorkerProcess, events: int) -> dict[str, object]:
    """Start the worker on the backlog; its rate from its first to its last applied event,
    polled on ``/metrics`` every ``POLL`` seconds (the worker is started here, so the rate
    includes no idle time before the backlog)."""
    samples: list[tuple[float, float]] = []
    worker.start()
    async with aiohttp.ClientSession() as http:
        while not samples or samples[-1][1] < events:
            count = await processed(http, worker.url)
            if count is not None:
                samples.append((time.time(), count))
            if worker.process is not None and worker.process.poll() is not None:
                raise SystemExit(f"the worker exited:\n{worker.log_tail()}")
            await asyncio.sleep(POLL)
    first = next(i for i, (_, count) in enumerate(samples) if count > 0)
    (started, at_start), (ended, _) = samples[max(first - 1, 0)], samples[-1]
    step = round(1 / POLL)  # one-second windows
    windows = [
        (b - a) / (tb - ta)
        for (ta, a), (tb, b) in zip(
            samples[first::step], samples[first + step :: step], strict=False
        )
    ]
    return {
        "events": events,
        "per_s": round((events - at_start) / (ended - started)),
        "per_s_one_second_windows_median": round(float(np.median(windows))) if windows else None,
    }


async def changelog_bytes(settings: Settings, raw: list[tuple[bytes, bytes]]) -> dict[str, object]:
    """Bytes (key plus value) the user-state changelog received, per applied event, against
    the raw event's bytes (key plus value as produced)."""
    consumer = AIOKafkaConsumer(
        changelog_topic(settings),
        bootstrap_servers=KAFKA_BOOTSTRAP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.assignment()
        while not partitions:
            await asyncio.sleep(0.1)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        records = size = 0
        while [p for p, end in ends.items() if await consumer.position(p) < end]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batches.values():
                records += len(messages)
                size += sum(len(m.key or b"") + len(m.value or b"") for m in messages)
    finally:
        await consumer.stop()
    event_bytes = sum(len(key) + len(value) for key, value in raw) / len(raw)
    return {
        "records": records,
        "records_per_event": round(records / len(raw), 3),
        "bytes_per_event": round(size / len(raw), 1),
        "raw_event_bytes": round(event_bytes, 1),
        "ratio_to_raw_event": round(size / len(raw) / event_bytes, 2),
    }


async def baseline_and_pipeline(
    env: dict[str, str], folder: Path, events: list, log: Path
) -> tuple[WorkerProcess, dict[str, object]]:
    """In one run: the backlog produced, drained by the bare agent, then by the worker."""
    messages = encoded(events)
    create_topics(env)
    produced = len(messages) / await produce_backlog(env["RECSYS_EVENTS_TOPIC"], messages)
    bare = await asyncio.to_thread(bare_agent_rate, env, folder, len(messages))
    worker = WorkerProcess(env, log)
    pipeline = await pipeline_rate(worker, len(messages))
    worker.wait_ready()
    changelog = await changelog_bytes(Settings.from_env(env), messages)
    return worker, {
        "events": len(messages),
        "produced_per_s": round(produced),
        "bare_agent": bare,
        "pipeline": pipeline,
        "ratio": round(pipeline["per_s"] / bare["per_s"], 2),
        "changelog": changelog,
    }


async def memory(worker: WorkerProcess, events: list) -> dict[str, object]:
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [
            key async for key in redis.scan_iter(match=f"{worker.redis_prefix}:rec:*", count=1000)
        ]
        sample = keys[:: max(1, len(keys) // 1000)]
        sizes = [await redis.memory_usage(key) for key in sample]
        info = await redis.info("memory")
    finally:
        await redis.aclose()
    pairs = len({(e.user_id, e.item_id) for e in events})
    return {
        "events": len(events),
        "distinct_user_item_pairs": pairs,
        "worker_rss_mib": round(rss_bytes(worker.pid) / 2**20),
        "trainer_rss_mib": round(sum(rss_bytes(c) for c in children(worker.pid)) / 2**20),
        "cached_lists": len(keys),
        "redis_bytes_per_cached_list": round(float(np.mean(sizes))) if sizes else None,
        "redis_used_memory_mib": round(info["used_memory"] / 2**20, 1),
    }


async def fit_in_pipeline(
    worker: WorkerProcess, events: list, settings: Settings
) -> dict[str, object]:
    redis = Redis.from_url(REDIS_URL)
    models = ModelStore(redis, RedisKeys(worker.redis_prefix))
    try:
        before = await models.snapshot_version()
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{worker.url}/admin/retrain") as response,
        ):
            assert response.status == 202
        version = before
        while version == before or version is None:
            await asyncio.sleep(0.5)
            version = await models.snapshot_version()
        _, meta = decode_model(await models.load(version))
    finally:
        await redis.aclose()
    metrics = meta["metrics"]
    rows = interaction_rows(events, settings.weight)
    rows.update({u: {"marker": 0.5} for u in markers("http")})
    params = als_params(settings)
    _, matrix = ranker.interaction_matrix(list(rows.values()))
    bare = []
    for _ in range(2):
        als = ranker.als_model(params)
        started = time.perf_counter()
        als.fit(matrix, show_progress=False)
        bare.append(time.perf_counter() - started)
    return {
        "trainer": metrics,
        "bare_matrix": {"users": matrix.shape[0], "items": matrix.shape[1], "nnz": matrix.nnz},
        "bare_fit_seconds": [round(s, 2) for s in bare],
        "ratio": round(metrics["fit_seconds"] / min(bare), 2),
    }


async def main(args: argparse.Namespace) -> None:
    settings = Settings()
    events = read_events(args.events)[: args.limit or None]
    reports: dict[str, object] = {"machine": machine()}
    overrides = {} if args.trainer else {"RECSYS_RUN_TRAINER": "false"}
    with own_settings("ingest", RECSYS_PARTITIONS=str(PARTITIONS), **overrides) as (env, folder):
        worker, reports["kafka"] = await baseline_and_pipeline(
            env, folder, events, log_path("ingest", env)
        )
        try:
            if args.trainer:
                await asyncio.sleep(5)  # the trainer catches up with the changelog
                reports["memory"] = await memory(worker, events)
                reports["fit"] = await fit_in_pipeline(worker, events, settings)
            if args.http_seconds:
                reports["http"] = await http_ingest(worker, args)
        finally:
            worker.stop()
    k = reports["kafka"]
    print(
        f"{k['events']} events (produced at {k['produced_per_s']}/s) on {PARTITIONS} partitions: "
        f"bare Faust agent {k['bare_agent']['per_s']}/s, pipeline {k['pipeline']['per_s']}/s "
        f"(median of 1 s windows {k['pipeline']['per_s_one_second_windows_median']}/s), "
        f"ratio {k['ratio']}"
    )
    c = k["changelog"]
    print(
        f"changelog: {c['records_per_event']} records and {c['bytes_per_event']} bytes per event, "
        f"{c['ratio_to_raw_event']}x the raw event ({c['raw_event_bytes']} bytes)"
    )
    if "http" in reports:
        h = reports["http"]
        print(
            f"HTTP (wrk): {h['events']} events, {h['accepted_per_s']}/s accepted, "
            f"{h['applied_per_s']}/s applied, drained {h['drain_after_load_s']} s after the load"
        )
    if "memory" in reports:
        m = reports["memory"]
        print(
            f"worker RSS {m['worker_rss_mib']} MiB, trainer (its child) RSS "
            f"{m['trainer_rss_mib']} MiB for {m['distinct_user_item_pairs']} user-item pairs; "
            f"Redis: {m['redis_bytes_per_cached_list']} bytes per cached list "
            f"({m['cached_lists']} lists)"
        )
        f = reports["fit"]
        print(
            f"fit in the trainer {f['trainer']['fit_seconds']} s vs bare implicit "
            f"{f['bare_fit_seconds']} s on {f['bare_matrix']}: ratio {f['ratio']}"
        )
    write_report(reports, args.out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default=DATA)
    parser.add_argument("--limit", type=int, default=0, help="the first N events only (0: all)")
    parser.add_argument(
        "--no-trainer",
        dest="trainer",
        action="store_false",
        help="run the worker without its trainer, and skip the memory and fit phases",
    )
    parser.add_argument("--http-seconds", type=int, default=15, help="0: no HTTP phase")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per HTTP request")
    parser.add_argument("--out", default="ingest.json")
    asyncio.run(main(parser.parse_args()))
