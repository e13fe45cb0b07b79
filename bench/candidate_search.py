"""Exact top-N search over item factors: time and memory per catalogue size.

Decides whether ranking every item for every user (what the fold-in does today) holds up as the
catalogue grows, or an approximate nearest-neighbour index is needed. Random float32 factors
stand in for a model: the cost of exact search depends on the shapes only, not on the values.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/candidate_search.py

For each catalogue size and N it times, single-threaded like a worker's ranking thread:

- numpy, one user: ``items @ user``, ``argpartition`` for the top N, then a sort of those N;
- numpy, a batch of users at once (a fold-in tick): one matmul, row-wise argpartition and sort;
- implicit's ``topk`` (``implicit.cpu.topk``, what ``ALS.recommend`` calls), one user and a batch.

Prints a table and writes JSON to bench/results/candidate_search.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

try:
    from implicit.cpu.topk import topk
except ImportError:  # the benchmark still runs without implicit's compiled extension
    topk = None

ROOT = Path(__file__).resolve().parent.parent


def numpy_top_one(items: np.ndarray, users: np.ndarray, n: int) -> np.ndarray:
    """The top n of the first user, as in the single-user loop of a request."""
    scores = items @ users[0]
    top = np.argpartition(scores, -n)[-n:]
    return top[np.argsort(-scores[top])]


def numpy_top_batch(items: np.ndarray, users: np.ndarray, n: int) -> np.ndarray:
    scores = users @ items.T
    top = np.argpartition(scores, -n, axis=1)[:, -n:]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def implicit_top(items: np.ndarray, users: np.ndarray, n: int) -> np.ndarray:
    ids, _ = topk(items, users, n, num_threads=1)
    return ids


def timings(run: Callable[[np.ndarray], object], queries: list[np.ndarray]) -> list[float]:
    """Seconds per call, after one untimed warm-up call."""
    run(queries[0])
    spent = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        spent.append(time.perf_counter() - started)
    return spent


def summary(label: str, items: int, n: int, batch: int, seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "method": label,
        "items": items,
        "n": n,
        "users_per_call": batch,
        "calls": len(seconds),
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "median_ms_per_user": float(np.median(ms)) / batch,
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def bench_size(args: argparse.Namespace, size: int, rng: np.random.Generator) -> list[dict]:
    items = rng.standard_normal((size, args.factors), dtype=np.float32)
    users = rng.standard_normal((args.users, args.factors), dtype=np.float32)
    singles = [users[[row]] for row in range(args.users)]
    batches = [
        rng.standard_normal((args.batch, args.factors), dtype=np.float32)
        for _ in range(args.batches)
    ]
    results = []
    for n in args.n:
        expected = numpy_top_batch(items, users[:3], n)
        found = [numpy_top_one(items, single, n) for single in singles[:3]]
        assert all(set(expected[row]) == set(found[row]) for row in range(3)), "numpy paths differ"
        methods = [("numpy", numpy_top_one, numpy_top_batch)]
        if topk is not None:
            assert (np.sort(implicit_top(items, users[:3], n)) == np.sort(expected)).all()
            methods.append(("implicit.topk", implicit_top, implicit_top))
        for label, one, many in methods:
            spent = timings(partial(one, items, n=n), singles)
            results.append(summary(label, size, n, 1, spent))
            spent = timings(partial(many, items, n=n), batches)
            results.append(summary(label, size, n, args.batch, spent))
    for result in results:
        result["factor_matrix_mb"] = items.nbytes / 2**20
        result["batch_score_matrix_mb"] = args.batch * size * 4 / 2**20
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="10000,100000,300000,1000000")
    parser.add_argument("--n", default="10,100")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--users", type=int, default=200, help="single-user calls per case")
    parser.add_argument("--batch", type=int, default=100, help="users per batched call")
    parser.add_argument("--batches", type=int, default=20, help="batched calls per case")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/candidate_search.json")
    args = parser.parse_args()
    args.n = [int(n) for n in args.n.split(",")]
    rng = np.random.default_rng(args.seed)
    results = []
    for size in (int(value) for value in args.items.split(",")):
        results += bench_size(args, size, rng)
    machine = {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "implicit_topk": topk is not None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    header = ("method", "items", "N", "users/call", "median ms", "p99 ms", "ms/user", "factors MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(
            f"| {r['method']} | {r['items']:,} | {r['n']} | {r['users_per_call']} "
            f"| {r['median_ms']:.2f} | {r['p99_ms']:.2f} | {r['median_ms_per_user']:.3f} "
            f"| {r['factor_matrix_mb']:.0f} |"
        )
    print(f"machine: {machine}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {"factors": args.factors, "dtype": "float32", "seed": args.seed}
    args.out.write_text(
        json.dumps({"machine": machine, "config": config, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
