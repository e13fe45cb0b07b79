"""Model: the product's full fit against a bare implicit fit of the same matrix, and the
pipeline's fold-in against bare ``partial_fit_users``, on Online Retail or a synthetic set.

* **Fit**: ``app.ranker.fit`` (rows of item -> weight, as the trainer holds them) against
  ``AlternatingLeastSquares.fit`` on the CSR matrix ``ranker.fit`` builds, same parameters
  (the product's settings: 64 factors, 15 iterations, one thread), alternated ``--repeat``
  times; the ratio of the medians.
* **Fold-in**: users per second in batches of ``--batch`` users (a 200 ms tick at 1,000
  events/s touches about 200): bare ``partial_fit_users``; ``ranker.fold_in`` (the same exact
  solve); ``ranker.recommend`` (solve and rank the top 100 unseen); and the pipeline's
  ``ListRefresher.refresh`` (solve, rank, encode, one Redis pipeline write, under a bench
  prefix). The ratio is bare ``partial_fit_users`` users/s over ``refresh`` users/s.

``--synthetic USERS,ITEMS,EVENTS`` draws events instead: users uniform, items Zipf-like
(exponent 1.1), weights as purchases. The scale run is ``--synthetic 1000000,100000,10000000``.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/model.py
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/model.py --synthetic 1000000,100000,10000000 \\
        --repeat 1 --out model_scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

import numpy as np
from _support import machine, rss_bytes, write_report
from redis.asyncio import Redis

from app import ranker
from app.datasets import read_events
from app.evaluation.offline import interaction_rows
from app.models import UserState
from app.refresher import ListRefresher, history
from app.retraining import als_params
from app.settings import Settings
from app.stores import Stores

DATA = "/work/shared/datasets/online-retail/online_retail.csv.gz"


def synthetic_rows(users: int, items: int, events: int) -> list[dict[str, float]]:
    """``events`` purchases (weight 2) of Zipf-like items by uniform users, summed per pair."""
    rng = np.random.default_rng(42)
    user = rng.integers(0, users, events)
    ranks = np.arange(1, items + 1, dtype=np.float64)
    item = rng.choice(items, size=events, p=ranks**-1.1 / (ranks**-1.1).sum())
    order = np.lexsort((item, user))
    user, item = user[order], item[order]
    rows: list[dict[str, float]] = [{} for _ in range(users)]
    for u, i in zip(user.tolist(), item.tolist(), strict=True):
        row = rows[u]
        key = f"i{i}"
        row[key] = row.get(key, 0.0) + 2.0
    return [row for row in rows if row]


def fit_figures(rows: list[dict[str, float]], params: ranker.AlsParams, repeat: int) -> dict:
    product, bare = [], []
    model = None
    for _ in range(repeat):
        started = time.perf_counter()
        model = ranker.fit(rows, params, "bench", time.time())
        product.append(time.perf_counter() - started)
        started = time.perf_counter()
        _, matrix = ranker.interaction_matrix(rows)
        built = time.perf_counter() - started
        als = ranker.als_model(params)
        started = time.perf_counter()
        als.fit(matrix, show_progress=False)
        bare.append(time.perf_counter() - started)
    return {
        "model": model,
        "ranker_fit_s": [round(s, 2) for s in product],
        "bare_fit_s": [round(s, 2) for s in bare],
        "matrix_build_s": round(built, 2),
        "ratio": round(statistics.median(product) / statistics.median(bare), 3),
        "matrix": {"users": matrix.shape[0], "items": matrix.shape[1], "nnz": matrix.nnz},
    }


def users_per_s(run, batches: list, repeat: int = 3) -> float:
    """The best of ``repeat`` passes over all batches: users per second."""
    best = 0.0
    users = sum(batch.shape[0] if hasattr(batch, "shape") else len(batch) for batch in batches)
    for _ in range(repeat):
        started = time.perf_counter()
        for batch in batches:
            run(batch)
        best = max(best, users / (time.perf_counter() - started))
    return best


async def fold_in_figures(
    model: ranker.FactorModel, rows: list[dict[str, float]], batch: int, settings: Settings
) -> dict[str, float]:
    rng = np.random.default_rng(5)
    chosen = [
        rows[i] for i in rng.choice(len(rows), size=min(len(rows), 20 * batch), replace=False)
    ]
    batches = [chosen[i : i + batch] for i in range(0, len(chosen), batch)]
    matrices = [model.rows_matrix(b) for b in batches]
    bare = ranker.als_model(model.params)
    bare.item_factors = model.item_factors
    bare.user_factors = np.zeros((batch, model.params.factors), dtype=np.float32)
    figures = {
        "bare_partial_fit_users": users_per_s(
            lambda m: bare.partial_fit_users(np.arange(m.shape[0]), m), matrices
        ),
        "ranker_fold_in": users_per_s(lambda b: ranker.fold_in(model, b), batches),
        "ranker_recommend_top100": users_per_s(
            lambda b: ranker.recommend(model, b, settings.cache_size), batches
        ),
    }
    redis = Redis.from_url(settings.redis_url)
    own = replace(settings, redis_prefix=f"bench:{uuid.uuid4().hex[:8]}", cache_ttl=60)
    refresher = ListRefresher(own, Stores.of(redis, own), states=None)
    refresher.model = model
    states = [
        {
            f"u{i}": history(UserState(items={item: [w, 1, 0.0] for item, w in row.items()}))
            for i, row in enumerate(b)
        }
        for b in batches
    ]
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for batch_states in states:
            await refresher.refresh(batch_states)
        best = max(best, len(chosen) / (time.perf_counter() - started))
    figures["pipeline_refresh"] = best
    refresher.close()
    async for key in redis.scan_iter(match=f"{own.redis_prefix}:*"):
        await redis.delete(key)
    await redis.aclose()
    figures = {name: round(value) for name, value in figures.items()}
    figures["ratio_bare_over_pipeline"] = round(
        figures["bare_partial_fit_users"] / figures["pipeline_refresh"], 2
    )
    return figures


async def main(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    params = als_params(settings)
    started = time.perf_counter()
    if args.synthetic:
        users, items, events = (int(part) for part in args.synthetic.split(","))
        rows = synthetic_rows(users, items, events)
        source = f"synthetic {users} users x {items} items x {events} events"
    else:
        rows = list(interaction_rows(read_events(args.events), settings.weight).values())
        source = args.events
    print(f"{source}: {len(rows)} users with events ({time.perf_counter() - started:.0f} s)")
    fit = fit_figures(rows, params, args.repeat)
    model = fit.pop("model")
    rss = rss_bytes(os.getpid())
    fold = await fold_in_figures(model, rows, args.batch, settings)
    report = {
        "machine": machine(),
        "source": source,
        "params": {k: v for k, v in params.__dict__.items()},
        "fit": fit,
        "fold_in_users_per_s": {"batch": args.batch, **fold},
        "bench_process_rss_mib": round(rss / 2**20),
    }
    print(f"matrix {fit['matrix']} (built in {fit['matrix_build_s']} s)")
    print(f"{'fit':24} {'seconds':>20}")
    print(f"{'app.ranker.fit':24} {fit['ranker_fit_s']!s:>20}")
    print(f"{'bare implicit fit':24} {fit['bare_fit_s']!s:>20}")
    print(f"{'ratio (medians)':24} {fit['ratio']:>20}")
    print(f"{'fold-in, batch ' + str(args.batch):32} {'users/s':>10}")
    for name, value in fold.items():
        print(f"{name:32} {value:>10}")
    write_report(report, args.out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default=DATA)
    parser.add_argument("--synthetic", help="USERS,ITEMS,EVENTS instead of --events")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--out", default="model.json")
    asyncio.run(main(parser.parse_args()))
