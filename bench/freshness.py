"""Freshness: time from an accepted event to its user's updated list in Redis.

Needs a running worker (``make up``) whose model already knows the bundled sample
(``make feed``). For each probe, a user's current top item is clicked over HTTP; the probe
ends when that item has left the user's cached list (the event was applied and the list
rewritten). Measured idle and under a steady background load, in the same process.

    .venv/bin/python bench/freshness.py --probes 200 --load 1000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import statistics
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


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


async def probe(
    http: aiohttp.ClientSession, redis: Redis, url: str, prefix: str, user_id: str
) -> tuple[float, float, float] | None:
    key = f"{prefix}:rec:{user_id}"
    entry = json.loads(await redis.get(key) or "null")
    if not entry or entry["source"] != "personal":
        return None
    top = entry["items"][0][0]
    sent_at = time.time()
    async with http.post(
        f"{url}/events", json={"user_id": user_id, "item_id": top, "action": "click"}
    ) as response:
        assert response.status == 202
    accepted_at = time.time()
    deadline = accepted_at + 10
    while time.time() < deadline:
        entry = json.loads(await redis.get(key))
        if top not in (item for item, _ in entry["items"]):
            return entry["updated_at"] - accepted_at, entry["updated_at"] - sent_at, accepted_at
        await asyncio.sleep(0.003)
    raise TimeoutError(f"{user_id}: no update within 10 s")


async def run_probes(http, redis, args, users: list[str]) -> list[tuple[float, float, float]]:
    results = []
    for user_id in users:
        result = await probe(http, redis, args.url, args.prefix, user_id)
        if result is not None:
            results.append(result)
        await asyncio.sleep(1 / args.probe_rate)
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
    with open(ROOT / "data" / "sample-events.csv", newline="") as handle:
        return list(csv.DictReader(handle))


async def main(args: argparse.Namespace) -> None:
    rows = load_sample()
    users = sorted({row["user_id"] for row in rows})
    items = sorted({row["item_id"] for row in rows})
    random.Random(7).shuffle(users)
    half = min(args.probes, len(users) // 2)
    redis = Redis.from_url(args.redis)
    reports = []
    async with aiohttp.ClientSession() as http:
        idle = await run_probes(http, redis, args, users[:half])
        reports.append(summary("idle", idle, 0))
        stop = asyncio.Event()
        loader = asyncio.create_task(background_load(http, args.url, args.load, items, stop))
        await asyncio.sleep(2)
        loaded = await run_probes(http, redis, args, users[half : 2 * half])
        stop.set()
        sent = await loader
        reports.append(summary("loaded", loaded, args.load))
    await redis.aclose()
    header = ("run", "load ev/s", "probes", "p50 ms", "p95 ms", "p99 ms", "max ms")
    print(f"{header[0]:8} {header[1]:>9} {header[2]:>6} " + " ".join(f"{h:>7}" for h in header[3:]))
    for report in reports:
        ms = report["accepted_to_redis_ms"]
        print(
            f"{report['label']:8} {report['background_events_per_s']:>9} {report['probes']:>6} "
            f"{ms['p50']:7.1f} {ms['p95']:7.1f} {ms['p99']:7.1f} {ms['max']:7.1f}"
        )
    print(f"(accepted = 202 received; background events sent: {sent})")
    out = ROOT / "bench" / "results" / "freshness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:6066")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="recsys")
    parser.add_argument("--probes", type=int, default=100, help="probes per run (idle, loaded)")
    parser.add_argument("--probe-rate", type=float, default=10.0, help="probes per second")
    parser.add_argument("--load", type=int, default=1000, help="background events per second")
    asyncio.run(main(parser.parse_args()))
