"""Ingest: events/s sustained end to end on one worker, over HTTP and straight to Kafka; then,
on the data that is in, the memory it takes and the trainer's full fit.

Starts its own worker (unique app id, topics, Redis prefix; see harness/worker.py), then:

1. **HTTP**: wrk posts ``{"events": [...]}`` batches of random views (100k users, 10k items)
   for ``--http-seconds`` with ``--connections`` connections (bench/ingest.lua); the 202 rate
   is wrk's. Kafka holds what the agent has not applied yet, so the end-to-end rate is the
   events sent divided by the time until the last one is applied (one marker user per
   partition, posted last, polled on ``GET /users``).
2. **Kafka**: the Online Retail events (406,829, original timestamps) produced with aiokafka
   straight to the events topic, keyed by user as the README asks; the same end-to-end
   measure.
3. **Memory**: the worker's RSS before and after, per million events and per million distinct
   user-item pairs; Redis bytes per user (``MEMORY USAGE`` of cached lists, and the growth of
   Redis's used memory over the users).
4. **Fit in the pipeline**: ``POST /admin/retrain``; the trainer's ``fit_seconds`` as published
   with the model, against a bare implicit fit of the same matrix in this process.

wrk is the Debian package ``wrk`` (``apt-get install -y wrk``). Usage:

    .venv/bin/python bench/ingest.py            # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import aiohttp
import numpy as np
import orjson
from _support import machine, own_worker, rss_bytes, run_wrk, write_report
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis

from app import ranker
from app.datasets import read_events
from app.evaluation.offline import interaction_rows
from app.retraining import als_params
from app.settings import Settings
from app.stores.keys import RedisKeys
from app.stores.model import ModelStore, decode_model
from harness.worker import WorkerProcess

DATA = "/work/shared/datasets/online-retail/online_retail.csv.gz"
LUA = Path(__file__).with_name("ingest.lua")
PARTITIONS = 8


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


async def kafka_ingest(worker: WorkerProcess, events: list) -> dict[str, object]:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092", linger_ms=5, acks="all")
    await producer.start()
    started = time.time()
    try:
        pending = []
        for event in events:
            value = orjson.dumps(
                {
                    "user_id": event.user_id,
                    "item_id": event.item_id,
                    "action": event.action,
                    "timestamp": event.timestamp,
                }
            )
            pending.append(await producer.send(worker.topic, value, key=event.user_id.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    produced = time.time()
    async with aiohttp.ClientSession() as http:
        users = markers("kafka")
        await post_markers(http, worker.url, users)
        applied = await wait_markers(http, worker.url, users)
    return {
        "path": "Kafka (aiokafka, Online Retail)",
        "events": len(events),
        "produced_per_s": round(len(events) / (produced - started)),
        "applied_per_s": round(len(events) / (applied - started)),
        "drain_after_load_s": round(applied - produced, 1),
    }


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


async def memory(
    worker: WorkerProcess, before_rss: int, trainer_before: int, events: list
) -> dict[str, object]:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
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
    after = rss_bytes(worker.pid)
    trainer = sum(rss_bytes(child) for child in children(worker.pid))
    return {
        "events": len(events),
        "distinct_user_item_pairs": pairs,
        "worker_rss_mib": {"before": round(before_rss / 2**20), "after": round(after / 2**20)},
        "worker_rss_mib_per_million_events": round(
            (after - before_rss) / 2**20 / (len(events) / 1e6)
        ),
        "worker_rss_mib_per_million_pairs": round((after - before_rss) / 2**20 / (pairs / 1e6)),
        "trainer_rss_mib": {
            "before": round(trainer_before / 2**20),
            "after": round(trainer / 2**20),
        },
        "trainer_rss_mib_per_million_pairs": round(
            (trainer - trainer_before) / 2**20 / (pairs / 1e6)
        ),
        "cached_lists": len(keys),
        "redis_bytes_per_cached_list": round(float(np.mean(sizes))),
        "redis_used_memory_mib": round(info["used_memory"] / 2**20, 1),
    }


async def fit_in_pipeline(
    worker: WorkerProcess, events: list, settings: Settings
) -> dict[str, object]:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
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
    rows.update({u: {"marker": 0.5} for u in markers("http") + markers("kafka")})
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
    events = read_events(args.events)
    reports: dict[str, object] = {"machine": machine()}
    with own_worker("ingest") as worker:
        await asyncio.sleep(2)
        before_rss = rss_bytes(worker.pid)
        trainer_before = sum(rss_bytes(child) for child in children(worker.pid))
        reports["kafka"] = await kafka_ingest(worker, events)
        await asyncio.sleep(5)  # the trainer catches up with the changelog
        reports["memory"] = await memory(worker, before_rss, trainer_before, events)
        reports["fit"] = await fit_in_pipeline(worker, events, settings)
        reports["http"] = await http_ingest(worker, args)
    print(f"{'path':34} {'events':>8} {'sent/s':>8} {'applied/s':>9} {'drain s':>7}")
    for key in ("http", "kafka"):
        r = reports[key]
        sent = r.get("accepted_per_s", r.get("produced_per_s"))
        print(
            f"{r['path']:34} {r['events']:>8} {sent:>8} {r['applied_per_s']:>9} "
            f"{r['drain_after_load_s']:>7}"
        )
    m = reports["memory"]
    print(
        f"worker RSS {m['worker_rss_mib']['before']} -> {m['worker_rss_mib']['after']} MiB: "
        f"{m['worker_rss_mib_per_million_events']} MiB per million events, "
        f"{m['worker_rss_mib_per_million_pairs']} MiB per million user-item pairs; "
        f"trainer (its child) RSS {m['trainer_rss_mib']} MiB: "
        f"{m['trainer_rss_mib_per_million_pairs']} MiB per million pairs"
    )
    print(
        f"Redis: {m['redis_bytes_per_cached_list']} bytes per cached list "
        f"({m['cached_lists']} lists)"
    )
    f = reports["fit"]
    print(
        f"fit in the trainer {f['trainer']['fit_seconds']} s ({f['trainer']}) vs bare implicit "
        f"{f['bare_fit_seconds']} s on {f['bare_matrix']}: ratio {f['ratio']}"
    )
    write_report(reports, args.out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default=DATA)
    parser.add_argument("--http-seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per HTTP request")
    parser.add_argument("--out", default="ingest.json")
    asyncio.run(main(parser.parse_args()))
