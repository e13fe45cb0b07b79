"""Soak: a steady load held for a long time, and per minute what would show a leak or a drift:
the resident memory of the worker and its trainer, Redis's memory, and freshness and read p99.

It starts its own worker (with its trainer, unique names, harness/worker.py), feeds it the
bundled sample and waits for personal lists (as bench/freshness.py does), then for
``--minutes`` holds ``--rate`` events/s (views of 50,000 synthetic users over HTTP, 10 batches
a second), ``--read-rate`` reads/s of ``GET /recommend`` spread over ``--readers`` concurrent
readers, and freshness probes (a sample user clicks their top item; the probe ends when it left
their cached list). Flat columns mean no leak and no drift.

    .venv/bin/python bench/soak.py --minutes 30 --rate 1000 --read-rate 500
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import aiohttp
from _support import children, machine, own_worker, rss_bytes, write_report
from freshness import background_load, load_sample, timed_reads
from redis.asyncio import Redis

from harness.freshness import percentile, prepare, probe_until_stopped

MIB = 2**20
DRIFT_COLUMNS = (
    "worker_rss_mib",
    "trainer_rss_mib",
    "redis_used_mib",
    "freshness_p99_ms",
    "read_p99_ms",
)


def minute_row(
    minute: int,
    worker_pid: int,
    redis_memory: int,
    freshness: list[float],
    reads: list[float],
    events: float,
) -> dict:
    trainers = children(worker_pid)
    return {
        "minute": minute,
        "worker_rss_mib": round(rss_bytes(worker_pid) / MIB, 1),
        "trainer_rss_mib": round(sum(map(rss_bytes, trainers)) / MIB, 1) if trainers else None,
        "redis_used_mib": round(redis_memory / MIB, 1),
        "events_processed": int(events),
        "probes": len(freshness),
        "freshness_p50_ms": round(statistics.median(freshness), 1) if freshness else None,
        "freshness_p99_ms": round(percentile(freshness, 99), 1) if freshness else None,
        "reads": len(reads),
        "read_p50_ms": round(statistics.median(reads), 2) if reads else None,
        "read_p99_ms": round(percentile(reads, 99), 2) if reads else None,
    }


async def processed(http: aiohttp.ClientSession, url: str) -> float:
    """The worker's ``recsys_events_processed_total``, summed over actions."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("recsys_events_processed_total{")
    )


async def soak(url: str, prefix: str, worker_pid: int, args: argparse.Namespace) -> list[dict]:
    rows = load_sample()
    users = sorted({row["user_id"] for row in rows})
    items = sorted({row["item_id"] for row in rows})
    random.Random(7).shuffle(users)
    redis = Redis.from_url(args.redis)
    stop = asyncio.Event()
    reads: list[float] = []
    probed: list[tuple[float, float, float]] = []
    minutes = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        tasks = [
            asyncio.create_task(background_load(http, url, args.rate, items, stop)),
            asyncio.create_task(
                probe_until_stopped(http, redis, url, prefix, users, args.probe_rate, stop, probed)
            ),
            *(
                asyncio.create_task(
                    timed_reads(http, url, users, args.read_rate / args.readers, stop, seed, reads)
                )
                for seed in range(args.readers if args.read_rate > 0 else 0)
            ),
        ]
        started = time.monotonic()
        for minute in range(1, args.minutes + 1):
            await asyncio.sleep(max(0.0, started + 60 * minute - time.monotonic()))
            row = minute_row(
                minute,
                worker_pid,
                (await redis.info("memory"))["used_memory"],
                [accepted * 1000 for accepted, _, _ in probed],
                reads[:],
                await processed(http, url),
            )
            probed.clear()
            reads.clear()
            minutes.append(row)
            print_row(row)
            if any(task.done() for task in tasks):
                break  # a load task failed: its error is raised below
        stop.set()
        await asyncio.gather(*tasks)
    await redis.aclose()
    return minutes


COLUMNS = (
    ("minute", 6),
    ("worker_rss_mib", 10),
    ("trainer_rss_mib", 11),
    ("redis_used_mib", 10),
    ("events_processed", 12),
    ("freshness_p99_ms", 12),
    ("read_p99_ms", 10),
)


def print_row(row: dict) -> None:
    if row["minute"] == 1:
        print(" ".join(f"{name:>{width}}" for name, width in COLUMNS))
    print(" ".join(f"{row[name]!s:>{width}}" for name, width in COLUMNS), flush=True)


def drift(minutes: list[dict], column: str) -> dict | None:
    """The column's median over the first and the last third of the run (the first minute
    left out: the warm-up), and their ratio."""
    values = [row[column] for row in minutes[1:] if row[column] is not None]
    if len(values) < 3:
        return None
    third = max(1, len(values) // 3)
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    return {"first_third": first, "last_third": last, "ratio": last / first if first else math.inf}


async def main(args: argparse.Namespace) -> None:
    started = machine()
    with own_worker("soak") as worker:
        await prepare(worker.url, worker.redis_prefix, load_sample())
        minutes = await soak(worker.url, worker.redis_prefix, worker.pid, args)
    drifts = {column: drift(minutes, column) for column in DRIFT_COLUMNS}
    for column, found in drifts.items():
        if found is not None:
            print(
                f"{column}: first third {found['first_third']}, last third "
                f"{found['last_third']} (x{found['ratio']:.2f})"
            )
    write_report(
        {"machine": started, "args": vars(args), "minutes": minutes, "drift": drifts}, args.out
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument(
        "--read-rate", type=float, default=500.0, help="reads per second (0: no readers)"
    )
    parser.add_argument("--readers", type=int, default=10, help="concurrent readers")
    parser.add_argument("--probe-rate", type=float, default=5.0, help="freshness probes a second")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", default="soak.json")
    asyncio.run(main(parser.parse_args()))
