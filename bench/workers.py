"""Ingest throughput of a running deployment with one or more workers (issue 6's comparison).

Produces N events straight to ``user-actions`` (random users, so every partition gets work),
then one marker event per partition, and times until every marker is in the table state
(read through any worker's GET /users, which routes to the owner). Run it once with
``make up`` and once with ``make up WORKERS=2``, on an otherwise idle machine:

    .venv/bin/python bench/workers.py --events 30000 --label one-worker
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import aiohttp
import orjson
from _support import write_report
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner


def markers(partitions: int, tag: str) -> dict[int, str]:
    """One user id per partition, by the same partitioner the worker uses."""
    partitioner, chosen, n = DefaultPartitioner(), {}, 0
    every = list(range(partitions))
    while len(chosen) < partitions:
        user_id = f"marker-{tag}-{n}"
        chosen.setdefault(partitioner(user_id.encode(), every, every), user_id)
        n += 1
    return chosen


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(11)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    pending = []
    for _ in range(args.events):
        user_id = f"load-{rng.randrange(args.users)}"
        value = {"user_id": user_id, "item_id": str(rng.randrange(2000)), "action": "view"}
        pending.append(await producer.send(args.topic, orjson.dumps(value), key=user_id.encode()))
    tag = uuid.uuid4().hex[:6]
    for user_id in markers(args.partitions, tag).values():
        value = {"user_id": user_id, "item_id": "m", "action": "view"}
        pending.append(await producer.send(args.topic, orjson.dumps(value), key=user_id.encode()))
    await asyncio.gather(*pending)
    produced = time.monotonic() - started
    await producer.stop()
    waiting = set(markers(args.partitions, tag).values())
    async with aiohttp.ClientSession() as http:
        while waiting:
            for user_id in list(waiting):
                async with http.get(f"{args.url}/users/{user_id}") as response:
                    if response.status == 200:
                        waiting.discard(user_id)
            await asyncio.sleep(0.1)
    applied = time.monotonic() - started
    result = {
        "label": args.label,
        "events": args.events,
        "produced_per_s": round(args.events / produced),
        "applied_per_s": round(args.events / applied),
        "seconds": round(applied, 1),
    }
    print(f"{'run':14} {'events':>7} {'produced/s':>10} {'applied/s':>9} {'seconds':>7}")
    print(
        f"{args.label:14} {args.events:>7} {result['produced_per_s']:>10} "
        f"{result['applied_per_s']:>9} {result['seconds']:>7}"
    )
    write_report(result, f"workers_{args.label}.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:6066")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="user-actions")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--label", default="run")
    asyncio.run(main(parser.parse_args()))
