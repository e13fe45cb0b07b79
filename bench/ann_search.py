"""Approximate top-10 search against exact: recall@10, latency, build time and memory.

Companion of bench/candidate_search.py (exact costs only). For each catalogue size it builds
each candidate index on one thread and measures, against exact top-10 (implicit.cpu.topk):

- recall@10: the share of the exact top 10 the index returns in its top 10;
- one user per call and 100 users per call: median and p99 milliseconds;
- build seconds, and the index's size: serialised bytes (hnswlib's saved file, faiss's
  ``serialize_index``, usearch's ``memory_usage``), which include the index's own copy of the
  vectors. The process's RSS growth during the build is recorded too but is unreliable (freed
  arrays get reused).

Candidates, all maximum inner-product search (ALS scores are dot products):

- ``hnswlib-ip``: hnswlib's inner-product space on the raw factors (``app.candidates``);
- ``hnswlib-l2``, ``faiss-hnsw`` and ``usearch``: HNSW graphs in Euclidean space over the items
  augmented with one dimension sqrt(max_norm^2 - |y|^2) (queries get a 0 there), which makes the
  L2 order the inner-product order exactly;
- ``faiss-ivf``: an inverted file (IVF-Flat) with ``METRIC_INNER_PRODUCT``, no augmentation.

Factors are synthetic but structured: items are drawn around a few hundred cluster centres with
log-normal norms (popular items have long vectors, as in ALS), users around the same centres.
Random isotropic Gaussians would make every ANN look worse than it does on a fitted model.

The compared libraries other than hnswlib are not product dependencies: first
``.venv/bin/pip install faiss-cpu usearch`` (measured with faiss-cpu 1.15.1, usearch 2.26.6).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/ann_search.py  # 100k, ~6 min
    ... bench/ann_search.py --items 20000 --users 300                         # ~20 s
    ... bench/ann_search.py --items 1000000 --libraries hnswlib-ip,faiss-ivf  # 1M, ~10 min

JSON to bench/results/ann_search.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from implicit.cpu.topk import topk

from app import candidates

ROOT = Path(__file__).resolve().parent.parent
K = 10


def clustered_factors(
    rng: np.random.Generator, items: int, users: int, factors: int, clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Item and user vectors around shared cluster centres; item norms log-normal."""
    centres = rng.standard_normal((clusters, factors)).astype(np.float32)

    def around(count: int) -> np.ndarray:
        labels = rng.integers(0, clusters, count)
        noise = 0.5 * rng.standard_normal((count, factors)).astype(np.float32)
        vectors = centres[labels] + noise
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    item_vectors = around(items) * rng.lognormal(0.0, 0.5, (items, 1)).astype(np.float32)
    return np.ascontiguousarray(item_vectors, dtype=np.float32), around(users)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_hnswlib_ip(items: np.ndarray, args: argparse.Namespace) -> Callable:
    """What app.candidates serves: hnswlib's inner-product space on the raw factors."""
    index = candidates.CandidateIndex.build(
        items, m=args.m, ef_construction=args.ef_construction, ef=args.ef
    )
    path = Path(tempfile.mkdtemp()) / "index.bin"
    index._index.save_index(str(path))
    return lambda users: index.search(users, K)[0], path.stat().st_size


def build_hnswlib_l2(items: np.ndarray, args: argparse.Namespace) -> Callable:
    import hnswlib

    index = hnswlib.Index(space="l2", dim=items.shape[1] + 1)
    index.init_index(max_elements=len(items), M=args.m, ef_construction=args.ef_construction)
    index.set_num_threads(1)
    index.add_items(_augment(items))
    index.set_ef(args.ef)
    path = Path(tempfile.mkdtemp()) / "index.bin"
    index.save_index(str(path))
    search = lambda users: index.knn_query(_pad(users), k=K, num_threads=1)[0]  # noqa: E731
    return search, path.stat().st_size


def _augment(items: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", items, items)
    extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None]
    return np.ascontiguousarray(np.hstack([items, extra]), dtype=np.float32)


def _pad(users: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([users, np.zeros((len(users), 1), np.float32)]))


def build_faiss_hnsw(items: np.ndarray, args: argparse.Namespace) -> Callable:
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(items.shape[1] + 1, args.m)
    index.hnsw.efConstruction = args.ef_construction
    index.add(_augment(items))
    index.hnsw.efSearch = args.ef
    return lambda users: index.search(_pad(users), K)[1], faiss.serialize_index(index).nbytes


def build_faiss_ivf(items: np.ndarray, args: argparse.Namespace) -> Callable:
    import faiss

    faiss.omp_set_num_threads(1)
    lists = int(4 * np.sqrt(len(items)))
    quantizer = faiss.IndexFlatIP(items.shape[1])
    index = faiss.IndexIVFFlat(quantizer, items.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    sample = items[np.random.default_rng(0).choice(len(items), min(len(items), 50 * lists))]
    index.train(sample)
    index.add(items)
    index.nprobe = args.nprobe
    return lambda users: index.search(users, K)[1], faiss.serialize_index(index).nbytes


def build_usearch(items: np.ndarray, args: argparse.Namespace) -> Callable:
    from usearch.index import Index

    index = Index(
        ndim=items.shape[1] + 1,
        metric="l2sq",
        dtype="f32",
        connectivity=args.m,
        expansion_add=args.ef_construction,
        expansion_search=args.ef,
    )
    index.add(np.arange(len(items)), _augment(items), threads=1)
    search = lambda users: index.search(_pad(users), K, threads=1).keys.reshape(len(users), K)  # noqa: E731
    return search, index.memory_usage


BUILDERS = {
    "hnswlib-ip": build_hnswlib_ip,
    "hnswlib-l2": build_hnswlib_l2,
    "faiss-hnsw": build_faiss_hnsw,
    "faiss-ivf": build_faiss_ivf,
    "usearch": build_usearch,
}


def latencies(run: Callable, queries: list[np.ndarray]) -> dict:
    run(queries[0])
    spent = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        spent.append((time.perf_counter() - started) * 1000)
    return {"median_ms": float(np.median(spent)), "p99_ms": float(np.percentile(spent, 99))}


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return hits / exact.size


def bench_size(args: argparse.Namespace, size: int) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    items, users = clustered_factors(rng, size, args.users, args.factors, args.clusters)
    exact = topk(items, users, K, num_threads=1)[0]
    singles = [users[[row]] for row in range(args.users)]
    batches = [users[start : start + 100] for start in range(0, args.users, 100)]
    results = [
        {
            "library": "exact (implicit.topk)",
            "items": size,
            "recall_at_10": 1.0,
            "build_s": 0.0,
            "index_mb": 0.0,
            "rss_growth_mb": 0.0,
            "one_user": latencies(lambda u: topk(items, u, K, num_threads=1), singles),
            "hundred_users": latencies(lambda u: topk(items, u, K, num_threads=1), batches),
        }
    ]
    for name in args.libraries:
        before, started = rss_mb(), time.perf_counter()
        search, index_bytes = BUILDERS[name](items, args)
        build_s, rss_growth = time.perf_counter() - started, rss_mb() - before
        found = np.vstack([search(batch) for batch in batches])
        results.append(
            {
                "library": name,
                "items": size,
                "recall_at_10": recall(found, exact),
                "build_s": build_s,
                "index_mb": index_bytes / 2**20,
                "rss_growth_mb": rss_growth,
                "one_user": latencies(search, singles),
                "hundred_users": latencies(search, batches),
            }
        )
        print(results[-1], flush=True)
        del search
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="100000")
    parser.add_argument("--libraries", default=",".join(BUILDERS))
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--users", type=int, default=1000, help="queries (a multiple of 100)")
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef", type=int, default=64, help="HNSW search breadth")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ann_search.json")
    args = parser.parse_args()
    args.libraries = args.libraries.split(",")
    results = []
    for size in (int(value) for value in args.items.split(",")):
        results += bench_size(args, size)
    print(
        "| library | items | recall@10 | 1 user median / p99 ms | 100 users median / p99 ms "
        "| build s | index MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        one, many = r["one_user"], r["hundred_users"]
        print(
            f"| {r['library']} | {r['items']:,} | {r['recall_at_10']:.3f} "
            f"| {one['median_ms']:.3f} / {one['p99_ms']:.3f} "
            f"| {many['median_ms']:.2f} / {many['p99_ms']:.2f} "
            f"| {r['build_s']:.1f} | {r['index_mb']:.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {key: value for key, value in vars(args).items() if key != "out"}
    args.out.write_text(json.dumps({"config": config, "results": results}, indent=2))


if __name__ == "__main__":
    main()
