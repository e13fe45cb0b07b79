"""Incremental publication: what one new-item fold costs as a delta against a full republish.

For a model of ``--items`` items x ``--factors`` factors and a fold of ``--new`` new items:

* **bytes published**: the delta blob (``encode_delta``) against the whole model re-encoded
  (``encode_model``, what every fold published before deltas);
* **worker apply**: ``apply_delta`` (decode the delta, ``ranker.with_items``) against
  ``decode_model`` of the whole blob (what every worker did per fold), medians of ``--repeat``;
* **Redis read**: one ``GET`` of each blob from the local Redis, medians.

Factors are random (the cost does not depend on their values). The two paths alternate in one
run, so the full republish is the baseline measured on the same machine state.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/model_delta.py --items 4000
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/model_delta.py --items 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import numpy as np
from _support import machine, write_report
from redis.asyncio import Redis

from app import ranker
from app.stores.model import apply_delta, decode_model, encode_delta, encode_model
from harness.services import REDIS_URL


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


async def redis_get_ms(blob: bytes, repeat: int) -> float:
    redis = Redis.from_url(REDIS_URL)
    key = f"bench:delta:{uuid.uuid4().hex}"
    try:
        await redis.set(key, blob)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await redis.get(key)
            samples.append(time.perf_counter() - started)
        return median_ms(samples)
    finally:
        await redis.delete(key)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--new", type=int, default=5, help="items per fold")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    params = ranker.AlsParams(factors=args.factors)
    gram = rng.standard_normal((args.factors, args.factors))
    item_ids = [f"item{i}" for i in range(args.items)]
    factors = rng.standard_normal((args.items, args.factors)).astype(np.float32)
    model = ranker.model_from_factors("1-bench", 0.0, item_ids, factors, gram @ gram.T, params)
    new_ids = [f"new{i}" for i in range(args.new)]
    new_factors = rng.standard_normal((args.new, args.factors)).astype(np.float32)
    folded = ranker.with_items(model, new_ids, new_factors, "2-bench+1.1", 1.0)

    full = encode_model(folded, {"new_items": args.new})
    delta = encode_delta("2-bench+1.1", 1.0, new_ids, new_factors, {"new_items": args.new})
    full_apply, delta_apply = [], []
    for _ in range(args.repeat):
        full_apply.append(timed(decode_model, full))
        delta_apply.append(timed(apply_delta, model, delta))
    report = {
        "machine": machine(),
        "items": args.items,
        "factors": args.factors,
        "new_items_per_fold": args.new,
        "repeat": args.repeat,
        "full": {
            "bytes": len(full),
            "worker_apply_ms": median_ms(full_apply),
            "redis_get_ms": asyncio.run(redis_get_ms(full, args.repeat)),
        },
        "delta": {
            "bytes": len(delta),
            "worker_apply_ms": median_ms(delta_apply),
            "redis_get_ms": asyncio.run(redis_get_ms(delta, args.repeat)),
        },
    }
    for path in ("full", "delta"):
        print(
            f"{path:>5}: {report[path]['bytes']:>11,} bytes published, worker apply "
            f"{report[path]['worker_apply_ms']} ms, Redis GET {report[path]['redis_get_ms']} ms"
        )
    write_report(report, f"model_delta_{args.items}.json")


if __name__ == "__main__":
    main()
