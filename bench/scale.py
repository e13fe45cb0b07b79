"""Scale: synthetic users/items/events produced to Kafka and applied by one, then two workers.

For each worker count (a fresh app id, topics and Redis prefix each run):

1. **Generate** (seeded, numpy): users in ``--clusters`` taste clusters; each cluster has its
   own Zipf-like item popularity (a permutation of the items, weight rank**-``--zipf``); 85% of a
   user's events come from their cluster, 15% from global popularity; views/clicks/purchases
   80/15/5; timestamps increasing. Values are pre-encoded JSON, keyed by user (murmur2, as the
   worker's partitioner).
2. **Produce** everything to the events topic with aiokafka (large batches, linger, many sends in
   flight) while the workers consume: the produce rate is reported.
3. **Ingest (backlog drain)**: ``recsys_events_processed_total`` summed over the workers' /metrics,
   polled every second; the sustained rate is the median of the 1-s window rates while events
   remain; the time to apply all is from the first produce to the last event counted.
   **Probes** (``Probes``, the method of bench/freshness.py): ``--probe-users`` users, given a
   list before the ingest, each click their current top item over POST /events; a probe ends
   when that item has left the cached list, and freshness = the list's ``updated_at`` minus the
   time the 202 came back. One probe every ``--probe-interval`` s, one in flight per user, at
   most ``--probe-limit`` at once, late (infinite) after ``--probe-timeout`` s. Under a backlog
   it includes the wait in Kafka's queue, so it says how far behind the pipeline is, not how
   fresh it is when it keeps up.
4. **Paced** phases at ``--rates`` events/s (Kafka, 10 sends a second) with the same probes:
   freshness when the pipeline keeps up, and the rate it applied while the events were sent.
5. **Memory**: peak RSS of each worker and of its trainer child (sampled every second; the
   trainer is a subprocess per worker, one active by Redis lease), Redis ``used_memory`` before
   and after, Kafka bytes on disk per event (the run's ``user-actions`` partitions and the
   tables' changelog partitions, separately, under ``--kafka-data``).
6. **Fit**: ``POST /admin/retrain``; ``fit_seconds`` as published with the model.
7. **Top-10 latency**: ``GET /recommend/{user}`` for ``--calls`` warm users, median and p99.

Small run (about 10 minutes on 2 shared cores); the full one is the defaults:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/scale.py --users 50000 --items 5000 \\
        --events 20000 --workers 1,2 --rates 100 --calls 200 --out scale-small.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import aiohttp
import numpy as np
from _support import (
    children,
    log_path,
    machine,
    own_settings,
    produce_backlog,
    rss_bytes,
    write_report,
)
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from app.stores.keys import RedisKeys
from app.stores.model import ModelStore, decode_model
from harness.http import get_metric
from harness.services import free_port
from harness.worker import WorkerProcess, create_topics, require_services

ACTIONS = np.array(["view", "click", "purchase"])
ACTION_SHARES = [0.80, 0.15, 0.05]


def generate(args: argparse.Namespace) -> tuple[list[bytes], list[bytes]]:
    """Keys and pre-encoded JSON values of ``args.events`` synthetic events, in time order."""
    rng = np.random.default_rng(args.seed)
    ranks = np.arange(1, args.items + 1, dtype=np.float64) ** -args.zipf
    popularity = np.cumsum(ranks / ranks.sum())
    orders = np.stack([rng.permutation(args.items) for _ in range(args.clusters)])
    user_cluster = rng.integers(0, args.clusters, args.users)
    users = rng.integers(0, args.users, args.events)
    rank = np.minimum(np.searchsorted(popularity, rng.random(args.events)), args.items - 1)
    in_cluster = rng.random(args.events) < 0.85
    items = np.where(in_cluster, orders[user_cluster[users], rank], rank)
    actions = ACTIONS[rng.choice(3, args.events, p=ACTION_SHARES)]
    start = time.time() - args.events * 0.001
    stamps = start + np.arange(args.events) * 0.001
    keys = [f"u{u}".encode() for u in users.tolist()]
    values = [
        b'{"user_id":"u%d","item_id":"i%d","action":"%s","timestamp":%.3f}' % (u, i, a, t)
        for u, i, a, t in zip(
            users.tolist(),
            items.tolist(),
            np.char.encode(actions).tolist(),
            stamps.tolist(),
            strict=True,
        )
    ]
    return keys, values


async def processed(http: aiohttp.ClientSession, urls: list[str]) -> float:
    """Events applied so far, summed over the workers."""
    counts = [await get_metric(http, url, "recsys_events_processed_total") for url in urls]
    return sum(counts)


class PeakMemory:
    """Peak RSS of each worker and of each worker's trainer child, sampled every second."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.worker_peak = [0] * len(workers)
        self.trainer_peak = [0] * len(workers)

    def sample(self) -> None:
        for n, worker in enumerate(self.workers):
            self.worker_peak[n] = max(self.worker_peak[n], rss_bytes(worker.pid))
            for child in children(worker.pid):
                with suppress(FileNotFoundError, RuntimeError):
                    self.trainer_peak[n] = max(self.trainer_peak[n], rss_bytes(child))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(1)

    def report(self) -> dict[str, list[int]]:
        return {
            "worker_peak_rss_mib": [round(b / 2**20) for b in self.worker_peak],
            "trainer_peak_rss_mib": [round(b / 2**20) for b in self.trainer_peak],
        }


class Probes:
    """Freshness probes as bench/freshness.py measures them: a probe user's current top item is
    clicked over POST /events and the probe ends when that item has left the user's cached list
    (the click was applied and the list rewritten); freshness = the list's ``updated_at`` minus
    the time the 202 came back. Each probe user has one probe in flight at most, at most
    ``limit`` run at once, and one not done within ``timeout`` s counts as infinitely late."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        redis: Redis,
        urls: list[str],
        prefix: str,
        users: int,
        limit: int,
        timeout: float,
    ) -> None:
        self.http, self.redis, self.urls, self.prefix = http, redis, urls, prefix
        self.users = [f"probe-{uuid.uuid4().hex[:6]}-{n}" for n in range(users)]
        self.free: asyncio.Queue[str] = asyncio.Queue()
        self.limit, self.timeout = asyncio.Semaphore(limit), timeout

    async def cached(self, key: str) -> list[tuple[str, float]]:
        entry = json.loads(await self.redis.get(key) or "null")
        return [] if entry is None else entry["items"]

    async def prepare(self, deadline: float = 120) -> None:
        """Give every probe user a non-empty list: one view each of an item of its own, so
        each user's popular list holds the others' items; more views while a list is empty."""
        started, round_ = time.monotonic(), 0
        waiting = list(self.users)
        while waiting:
            if time.monotonic() - started > deadline:
                raise RuntimeError(f"{len(waiting)} probe users got no list in {deadline} s")
            events = [
                {"user_id": user, "item_id": f"i{(n + round_) % len(self.users)}", "action": "view"}
                for n, user in enumerate(self.users)
                if user in waiting
            ]
            async with self.http.post(f"{self.urls[0]}/events", json={"events": events}) as r:
                assert r.status == 202, await r.text()
            await asyncio.sleep(3)
            waiting = [u for u in waiting if not await self.cached(f"{self.prefix}:rec:{u}")]
            round_ += 1
        for user in self.users:
            self.free.put_nowait(user)

    async def once(self, user: str, url: str) -> float | None:
        """One probe's freshness in seconds (inf when late); None when the list was empty."""
        key = f"{self.prefix}:rec:{user}"
        items = [item for item, _ in await self.cached(key)]
        if not items:
            return None
        top = items[0]
        async with self.http.post(
            f"{url}/events", json={"user_id": user, "item_id": top, "action": "click"}
        ) as response:
            assert response.status == 202, await response.text()
        accepted = time.time()
        while time.time() - accepted < self.timeout:
            entry = json.loads(await self.redis.get(key) or "null")
            if entry and top not in (item for item, _ in entry["items"]):
                return entry["updated_at"] - accepted
            await asyncio.sleep(0.05)
        return float("inf")

    async def guarded(self, user: str, url: str) -> float | None:
        try:
            return await self.once(user, url)
        finally:
            self.free.put_nowait(user)
            self.limit.release()

    async def run(self, interval: float, stop: asyncio.Event) -> list[float]:
        """A probe every ``interval`` s (when a user and a slot are free) until stopped; the
        freshness of each probe that had a list."""
        tasks, n = [], 0
        while not stop.is_set():
            await self.limit.acquire()
            user = await self.free.get()
            tasks.append(asyncio.create_task(self.guarded(user, self.urls[n % len(self.urls)])))
            n += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        return [r for r in await asyncio.gather(*tasks) if r is not None]


def percentiles_ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000, 1),
        "late": sum(v == float("inf") for v in values),
    }


def topic_bytes(kafka_data: Path, topic: str) -> int:
    """Bytes of the log segments of a topic's partitions (not their indexes, which Kafka
    preallocates at 10 MiB each); ``topic`` may be a glob."""
    return sum(f.stat().st_size for f in kafka_data.glob(f"{topic}-[0-9]*/*.log"))


@contextmanager
def deployment(count: int, overrides: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    """``count`` workers of one deployment (one app id, topics and Redis prefix; a port and
    data folder each), ready; stopped and their Redis keys deleted afterwards."""
    with own_settings("scale", **overrides) as (env, folder), ExitStack() as stack:
        require_services(env)
        create_topics(env)
        workers = []
        for n in range(count):
            worker_env = {
                **env,
                "RECSYS_WEB_PORT": env["RECSYS_WEB_PORT"] if n == 0 else str(free_port()),
                "RECSYS_DATA_DIR": str(folder / f"data-{n}"),
            }
            worker = WorkerProcess(worker_env, log_path(f"scale-{n}", env))
            worker.start()
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        yield workers


async def paced(
    http: aiohttp.ClientSession,
    probes: Probes,
    workers: list[WorkerProcess],
    rate: int,
    seconds: float,
    keys: list[bytes],
    values: list[bytes],
    interval: float,
) -> dict[str, object]:
    """``rate`` events/s to Kafka (10 sends a second, replaying the generated events) for
    ``seconds``, with probes; freshness when the pipeline keeps up."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9092", linger_ms=5)
    await producer.start()
    stop = asyncio.Event()
    probing = asyncio.create_task(probes.run(interval, stop))
    urls = [w.url for w in workers]
    first = await processed(http, urls)
    started = next_at = time.monotonic()
    sent, batch = 0, max(1, rate // 10)
    try:
        while time.monotonic() - started < seconds:
            for n in range(sent, sent + batch):
                await producer.send(
                    workers[0].topic, values[n % len(values)], key=keys[n % len(keys)]
                )
            sent += batch
            next_at += 0.1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await producer.flush()
        applied = await processed(http, urls) - first
        sending = time.monotonic() - started
    finally:
        await producer.stop()
        stop.set()
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent,
        "applied_while_sending_per_s": round(applied / sending),
        "freshness_ms": percentiles_ms(await probing),
    }


async def top10_latency(http: aiohttp.ClientSession, url: str, users: list[str]) -> dict:
    times = []
    for user in users:
        started = time.perf_counter()
        async with http.get(f"{url}/recommend/{user}") as response:
            assert response.status == 200, await response.text()
            await response.read()
        times.append(time.perf_counter() - started)
    return percentiles_ms(times)


async def fit(workers: list[WorkerProcess], http: aiohttp.ClientSession) -> dict[str, object]:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    models = ModelStore(redis, RedisKeys(workers[0].redis_prefix))
    try:
        before = await models.current_version()
        started = time.monotonic()
        async with http.post(f"{workers[0].url}/admin/retrain") as response:
            assert response.status == 202, await response.text()
        version = before
        while version == before or version is None:
            await asyncio.sleep(0.5)
            version = await models.current_version()
        _, meta = decode_model(await models.load(version))
    finally:
        await redis.aclose()
    return {"wall_seconds": round(time.monotonic() - started, 1), "metrics": meta["metrics"]}


async def run(count: int, args: argparse.Namespace, keys: list, values: list) -> dict:
    overrides = {"RECSYS_RETRAIN_INTERVAL": "1000000"} if args.no_auto_retrain else {}
    with deployment(count, overrides) as workers:
        urls = [w.url for w in workers]
        memory = PeakMemory(workers)
        memory.sample()
        redis = Redis.from_url("redis://127.0.0.1:6379/0")
        used_before = (await redis.info("memory"))["used_memory"]
        stop = asyncio.Event()
        sampler = asyncio.create_task(memory.run(stop))
        async with aiohttp.ClientSession() as http:
            probes = Probes(
                http,
                redis,
                urls,
                workers[0].redis_prefix,
                args.probe_users,
                args.probe_limit,
                args.probe_timeout,
            )
            await probes.prepare()
            base = await processed(http, urls)  # the probe users' own events
            started = time.monotonic()
            producing = asyncio.create_task(
                produce_backlog(workers[0].topic, zip(keys, values, strict=True))
            )
            probe_stop = asyncio.Event()
            probing = asyncio.create_task(probes.run(args.probe_interval, probe_stop))
            windows, last, last_at, done_at = [], 0.0, started, None
            for polls in itertools.count(1):
                await asyncio.sleep(1)
                now, count_now = time.monotonic(), await processed(http, urls) - base
                if polls % 30 == 0:
                    print(f"  {count_now:.0f} of {len(keys)} applied after {now - started:.0f} s")
                if count_now > last:
                    windows.append((count_now - last) / (now - last_at))
                last, last_at = count_now, now
                if count_now >= len(keys):
                    done_at = now
                    break
                if now - started > args.timeout:
                    break
            probe_stop.set()
            produce_seconds = await producing
            backlog_freshness = await probing
            ingest = {
                "events": len(keys),
                "produce_seconds": round(produce_seconds, 1),
                "produced_per_s": round(len(keys) / produce_seconds),
                "applied_per_s_median_1s_windows": round(statistics.median(windows or [0])),
                "seconds_to_apply_all": None if done_at is None else round(done_at - started, 1),
                "applied_per_s_overall": None
                if done_at is None
                else round(len(keys) / (done_at - started)),
                "freshness_under_backlog_ms": percentiles_ms(backlog_freshness),
            }
            paced_runs = [
                await paced(
                    http,
                    probes,
                    workers,
                    rate,
                    args.paced_seconds,
                    keys,
                    values,
                    args.probe_interval,
                )
                for rate in args.rates
            ]
            fitted = await fit(workers, http)
            await asyncio.sleep(2)
            warm = [f"u{u}" for u in range(0, args.users, max(1, args.users // args.calls))][
                : args.calls
            ]
            latency = await top10_latency(http, workers[0].url, warm)
        used_after = (await redis.info("memory"))["used_memory"]
        await redis.aclose()
        stop.set()
        await sampler
        memory.sample()
        app_id = workers[0].env["RECSYS_APP_ID"]
        events_bytes = topic_bytes(args.kafka_data, workers[0].topic)
        changelog_bytes = topic_bytes(args.kafka_data, f"{app_id}-*-changelog")
        total_events = len(keys) + sum(p["sent"] for p in paced_runs)
        return {
            "workers": count,
            "ingest": ingest,
            "paced": paced_runs,
            "memory": memory.report()
            | {
                "redis_used_memory_mib": {
                    "before": round(used_before / 2**20, 1),
                    "after": round(used_after / 2**20, 1),
                },
                "kafka_user_actions_bytes_per_event": round(events_bytes / total_events, 1),
                "kafka_changelog_bytes_per_event": round(changelog_bytes / total_events, 1),
                "kafka_events_counted": total_events,
            },
            "fit": fitted,
            "top10_latency_ms": latency,
        }


def print_summary(runs: list[dict]) -> None:
    print(
        f"{'workers':>7} {'prod/s':>8} {'applied/s':>9} {'all s':>7} {'fresh p50/p99 ms':>18} "
        f"{'worker MiB':>11} {'trainer MiB':>11} {'redis MiB':>10} {'B/ev':>6} {'chl B/ev':>8} "
        f"{'fit s':>6} {'top10 p50/p99':>14}"
    )
    for r in runs:
        i, m = r["ingest"], r["memory"]
        fb = i["freshness_under_backlog_ms"]
        lat = r["top10_latency_ms"]
        print(
            f"{r['workers']:>7} {i['produced_per_s']:>8} {i['applied_per_s_median_1s_windows']:>9} "
            f"{i['seconds_to_apply_all']!s:>7} {fb.get('p50')!s:>8}/{fb.get('p99')!s:<9} "
            f"{'/'.join(map(str, m['worker_peak_rss_mib'])):>11} "
            f"{'/'.join(map(str, m['trainer_peak_rss_mib'])):>11} "
            f"{m['redis_used_memory_mib']['after']:>10} "
            f"{m['kafka_user_actions_bytes_per_event']:>6} "
            f"{m['kafka_changelog_bytes_per_event']:>8} "
            f"{r['fit']['metrics'].get('fit_seconds')!s:>6} {lat['p50']!s:>6}/{lat['p99']!s:<7}"
        )
        for p in r["paced"]:
            fp = p["freshness_ms"]
            print(
                f"        paced {p['rate']}/s: applied {p['applied_while_sending_per_s']}/s, "
                f"freshness p50 {fp.get('p50')} ms p99 {fp.get('p99')} ms "
                f"({fp['count']} probes, {fp.get('late', 0)} late)"
            )


async def main(args: argparse.Namespace) -> None:
    conditions = machine()
    started = time.monotonic()
    keys, values = generate(args)
    generated = time.monotonic() - started
    print(f"generated {len(keys)} events in {generated:.1f} s")
    report = {
        "machine": conditions,
        "args": {k: str(v) for k, v in vars(args).items()},
        "generate_seconds": round(generated, 1),
        "runs": [],
    }
    for count in args.workers:
        report["runs"].append(await run(count, args, keys, values))
        print_summary(report["runs"][-1:])
        write_report(report, args.out)  # an hour-long run keeps each finished worker count
    print_summary(report["runs"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity exponent")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",") if x], default=[1000, 5000]
    )
    parser.add_argument("--paced-seconds", type=float, default=30)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    parser.add_argument("--probe-users", type=int, default=40, help="one probe each at a time")
    parser.add_argument("--probe-limit", type=int, default=20, help="probes in flight at most")
    parser.add_argument("--probe-timeout", type=float, default=300, help="a probe is late after")
    parser.add_argument("--calls", type=int, default=300, help="top-10 calls to warm users")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="ingest timeout, s")
    parser.add_argument("--no-auto-retrain", action="store_true")
    parser.add_argument("--kafka-data", type=Path, default=Path("/work/main/.data/kafka/data"))
    parser.add_argument("--out", default="scale.json")
    asyncio.run(main(parser.parse_args()))
