"""Freshness: time from an accepted event to its user's updated list in Redis, idle and under
steady background loads, and the highest load at which p99 stays under 1 s.

By default it starts its own worker (unique names, harness/worker.py), feeds it the bundled
sample, has the trainer fit on it and waits for personal lists; ``--url``/``--prefix`` use a
running worker instead (one that knows the sample: ``make feed``). For each probe, a user's
current top item is clicked over HTTP; the probe ends when that item has left the user's cached
list (the event was applied and the list rewritten): latency = the list's ``updated_at`` minus
the time the 202 came back. A probe not done within 10 s counts as infinitely late (a run stops
once p99 is sure to be over 10 s). Probes run
idle, then under each background rate (random views of 50,000 synthetic users, 10 batches a
second over HTTP), all in this process. Under each load, reads of ``GET /recommend`` are timed
too (``--read-rate`` a second).

    .venv/bin/python bench/freshness.py --rates 250,500,750,1000,1500
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import aiohttp
from _support import machine, own_worker, write_report
from redis.asyncio import Redis

from harness.data import SAMPLE_EVENTS
from harness.freshness import percentile, prepare, probe


async def background_load(
    http: aiohttp.ClientSession, url: str, rate: int, items: list[str], stop: asyncio.Event
) -> int:
    """Post ``rate`` events/s for synthetic users in 10 batches a second until stopped."""
    sent, batch, rng = 0, max(1, rate // 10), random.Random(1)
    next_at = time.monotonic()
    while not stop.is_set():
        events = [
            {
                "user_id": f"load-{rng.randrange(50_000)}",
                "item_id": rng.choice(items),
                "action": "view",
            }
            for _ in range(batch)
        ]
        async with http.post(f"{url}/events", json={"events": events}) as response:
            assert response.status == 202, await response.text()
        sent += batch
        next_at += 0.1
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return sent


async def timed_reads(
    http: aiohttp.ClientSession,
    url: str,
    users: list[str],
    rate: float,
    stop: asyncio.Event,
    seed: int = 3,
    latencies: list[float] | None = None,
) -> list[float]:
    """``GET /recommend/{user}?n=10`` for random known users at ``rate`` per second until
    stopped; each read's milliseconds (appended to ``latencies`` as they come, when given),
    timed from this process (its loop also drives the load, so these are upper bounds)."""
    latencies, rng = [] if latencies is None else latencies, random.Random(seed)
    while not stop.is_set():
        started = time.perf_counter()
        async with http.get(f"{url}/recommend/{rng.choice(users)}?n=10") as response:
            await response.read()
            assert response.status == 200, response.status
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
    return latencies


async def run_probes(
    http: aiohttp.ClientSession,
    redis: Redis,
    url: str,
    prefix: str,
    users: list[str],
    count: int,
    rate: float,
) -> list[tuple[float, float, float]]:
    """``count`` probes at ``rate`` per second, cycling through ``users``.

    Stops early once more than 1% of ``count`` probes took over 10 s: p99 is then over 10 s
    whatever the others do."""
    results = []
    for user_id in itertools.islice(itertools.cycle(users), count):
        result = await probe(http, redis, url, prefix, user_id)
        if result is not None:
            results.append(result)
        if sum(math.isinf(r[0]) for r in results) > count // 100:
            break
        await asyncio.sleep(1 / rate)
    return results


def summary(label: str, results: list[tuple[float, float, float]], load: int) -> dict:
    accepted = [r[0] * 1000 for r in results]
    sent = [r[1] * 1000 for r in results]
    return {
        "label": label,
        "background_events_per_s": load,
        "probes": len(results),
        "accepted_to_redis_ms": {
            "p50": statistics.median(accepted),
            "p95": percentile(accepted, 95),
            "p99": percentile(accepted, 99),
            "max": max(accepted),
        },
        "request_to_redis_ms": {
            "p50": statistics.median(sent),
            "p95": percentile(sent, 95),
            "p99": percentile(sent, 99),
            "max": max(sent),
        },
        "probes_at_and_ms": [(round(r[2], 3), round(r[0] * 1000, 1)) for r in results],
    }


def load_sample() -> list[dict[str, str]]:
    with open(SAMPLE_EVENTS, newline="") as handle:
        return list(csv.DictReader(handle))


async def measure(url: str, prefix: str, args: argparse.Namespace) -> list[dict]:
    rows = load_sample()
    users = sorted({row["user_id"] for row in rows})
    items = sorted({row["item_id"] for row in rows})
    random.Random(7).shuffle(users)
    redis = Redis.from_url(args.redis)
    reports = []
    async with aiohttp.ClientSession() as http:
        for rate in (0, *args.rates):  # 0: idle, the baseline of the same run
            stop = asyncio.Event()
            loader = None
            if rate:
                loader = asyncio.create_task(background_load(http, url, rate, items, stop))
                await asyncio.sleep(2)
            reader = asyncio.create_task(timed_reads(http, url, users, args.read_rate, stop))
            probed = await run_probes(http, redis, url, prefix, users, args.probes, args.probe_rate)
            stop.set()
            reads = await reader
            report = summary(f"{rate}/s" if rate else "idle", probed, rate)
            report["read_ms"] = {
                "reads": len(reads),
                "p50": statistics.median(reads),
                "p99": percentile(reads, 99),
                "max": max(reads),
            }
            if loader is not None:
                report["background_events_sent"] = await loader
                await asyncio.sleep(args.settle)  # let a backlog drain before the next rate
            reports.append(report)
    await redis.aclose()
    return reports


def print_table(reports: list[dict]) -> str | None:
    header = ("run", "load ev/s", "probes", "p50 ms", "p95 ms", "p99 ms", "max ms", "read p99")
    print(f"{header[0]:8} {header[1]:>9} {header[2]:>6} " + " ".join(f"{h:>8}" for h in header[3:]))
    for report in reports:
        ms = report["accepted_to_redis_ms"]
        read = report["read_ms"]["p99"]
        print(
            f"{report['label']:8} {report['background_events_per_s']:>9} {report['probes']:>6} "
            f"{ms['p50']:8.1f} {ms['p95']:8.1f} {ms['p99']:8.1f} {ms['max']:8.1f} {read:8.2f}"
        )
    under = [
        r["background_events_per_s"] for r in reports[1:] if r["accepted_to_redis_ms"]["p99"] < 1000
    ]
    best = None
    for report in reports[1:]:  # the highest rate of the unbroken run of passing rates
        if report["background_events_per_s"] not in under:
            break
        best = report["background_events_per_s"]
    print(f"(accepted = 202 received; highest load with p99 under 1 s: {best} events/s)")
    return best


async def main(args: argparse.Namespace) -> None:
    started = machine()
    if args.url:
        reports = await measure(args.url, args.prefix, args)
    else:
        with own_worker("freshness") as worker:
            await prepare(worker.url, worker.redis_prefix, load_sample())
            reports = await measure(worker.url, worker.redis_prefix, args)
    best = print_table(reports)
    write_report({"machine": started, "highest_rate_p99_under_1s": best, "runs": reports}, args.out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running worker (default: start one of our own)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="recsys", help="the --url worker's Redis prefix")
    parser.add_argument("--probes", type=int, default=100, help="probes per run")
    parser.add_argument("--probe-rate", type=float, default=10.0, help="probes per second")
    parser.add_argument(
        "--rates",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[250, 500, 750, 1000, 1500],
        help="background events per second, one run each",
    )
    parser.add_argument(
        "--read-rate", type=float, default=50.0, help="timed reads per second under each load"
    )
    parser.add_argument("--settle", type=float, default=15.0, help="seconds between runs")
    parser.add_argument("--out", default="freshness.json")
    asyncio.run(main(parser.parse_args()))
