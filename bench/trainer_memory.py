"""Trainer memory: the array-backed rows (``app.interactions``) against the old dict of dicts,
on the same synthetic user-state changelog, in one run.

Records are what the trainer tails: each is a user's FULL state as the table writes it
(``{"items": {item: [weight, count, last_at]}, "event_count": ...}``), and every user's state
is written several times as it grows (``--rewrites``), as the changelog does before
compaction. Item popularity is Zipf-like (exponent 1.1), row sizes heavy-tailed.

Each representation is built in a forked child of the process that holds the records, so its
resident-memory growth is its own; a second child per representation measures the same build
under ``tracemalloc`` (slower, so not timed). Printed: bytes per live pair (buffers only, and
everything the store holds), the apply rate, the CSR build, an ALS fit (64 factors), and a
background fit of the real ``Trainer`` while records keep being applied (loop lag, records
applied during the fit), and the store's ``put`` alone on decoded records against filling the
old dicts (best of three each). Nothing is written to disk.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/trainer_memory.py
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/trainer_memory.py --users 20000 --items 5000 \\
        --pairs 500000 --iterations 3     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.append(str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from app import ranker
from app.interactions import GROWTH, Interactions
from app.models import WEIGHT
from app.settings import Settings
from app.trainer import Trainer

Records = list[tuple[bytes, bytes]]
BATCH = 500  # records applied between yields to the loop during the background fit


def synthetic_changelog(
    users: int, items: int, pairs: int, rewrites: int, seed: int = 42
) -> tuple[Records, int, int]:
    """Changelog records (key, value), the pairs in them and the live pairs at the end."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(0.0, 1.0, users), 0.2, 60.0)
    sizes = np.maximum(1, np.round(sizes * pairs / sizes.sum())).astype(np.int64)
    ranks = np.arange(1, items + 1, dtype=np.float64)
    popularity = ranks**-1.1 / (ranks**-1.1).sum()
    drawn = rng.choice(items, size=int(sizes.sum() * 2), p=popularity)  # duplicates dropped
    names = [f"item-{i}" for i in range(items)]
    weights = rng.choice(
        [0.5, 1.0, 1.5, 2.0, 2.5, 4.0, 0.0],
        size=len(drawn),
        p=[0.3, 0.3, 0.1, 0.1, 0.1, 0.08, 0.02],
    ).tolist()  # 2% zeros: bought, then returned
    offsets = np.concatenate([[0], np.cumsum(sizes * 2)])
    finals: list[tuple[list[str], list[float]]] = []
    live = 0
    for user in range(users):
        low, high = int(offsets[user]), int(offsets[user + 1])
        chosen = list(dict.fromkeys(drawn[low:high].tolist()))[: int(sizes[user])]
        finals.append(([names[i] for i in chosen], weights[low : low + len(chosen)]))
        live += len(chosen)
    records: Records = []
    record_pairs = 0
    order = rng.permutation(users).tolist()
    for stage in range(1, rewrites + 1):
        for user in order:
            row_items, row_weights = finals[user]
            length = max(1, len(row_items) * stage // rewrites)
            record_pairs += length
            state = {
                "items": {
                    item: [weight, 1 + stage, 1_700_000_000.0 + stage]
                    for item, weight in zip(row_items[:length], row_weights, strict=False)
                },
                "event_count": length * stage,
                "last_event_at": 1_700_000_000.0 + stage,
                "applied_offset": stage * users + user,
                "forwarded_offsets": {},
                "recent_event_ids": [],
            }
            records.append((f"user-{user}".encode(), orjson.dumps(state)))
    return records, record_pairs, live


class OldRows:
    """The trainer's rows before app.interactions: a dict per user, a float object per pair."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}
        self.event_counts: dict[str, int] = {}

    def apply(self, key: bytes, value: bytes | None) -> None:
        user_id = key.decode()
        if value is None:
            self.rows.pop(user_id, None)
            self.event_counts.pop(user_id, None)
            return
        state = orjson.loads(value)
        self.rows[user_id] = {item: entry[WEIGHT] for item, entry in state["items"].items()}
        self.event_counts[user_id] = state.get("event_count", 0)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child (it inherits the records) and return its result."""
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    process = context.Process(target=lambda: results.put(work()))
    process.start()
    process.join()  # a result is a small dict: the pipe holds it until read
    if process.exitcode != 0:
        raise RuntimeError(f"the measuring child failed with exit code {process.exitcode}")
    return results.get()


def new_store(records: Records) -> Trainer:
    trainer = Trainer(Settings(), models=None, owner="bench")  # type: ignore[arg-type]
    for key, value in records:
        trainer.apply(key, value)
    return trainer


def old_store(records: Records) -> OldRows:
    old = OldRows()
    for key, value in records:
        old.apply(key, value)
    return old


def decoded(records: Records) -> list[tuple[str, list[str], list[float], int]]:
    """The records as the trainer hands them to the store: user id, items, weights, count."""
    rows = []
    for key, value in records:
        state = orjson.loads(value)
        entries = state["items"]
        weights = [entry[WEIGHT] for entry in entries.values()]
        rows.append((key.decode(), list(entries), weights, state.get("event_count", 0)))
    return rows


def put_seconds(records: Records) -> dict[str, float]:
    """Seconds to put every decoded record into a new store and into the old dicts (the JSON
    decode left out: what the store itself costs on the changelog tail), best of three each."""
    rows = decoded(records)

    def new_puts() -> None:
        store = Interactions()
        for user_id, items, weights, event_count in rows:
            store.put(user_id, items, weights, event_count)

    def old_puts() -> None:
        old, counts = {}, {}
        for user_id, items, weights, event_count in rows:
            old[user_id] = dict(zip(items, weights, strict=True))
            counts[user_id] = event_count

    result = {}
    for name, puts in (("new", new_puts), ("old", old_puts)):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            puts()
            times.append(time.perf_counter() - started)
            gc.collect()
        result[name] = min(times)
    return result


def traced(build: Callable[[Records], object], records: Records) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = build(records)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return {"traced": current - base, "traced_peak": peak - base}


T = TypeVar("T")


def built(build: Callable[[Records], T], records: Records) -> tuple[T, int, int, float]:
    """What ``build`` makes of the records, the RSS before, its RSS growth and its seconds."""
    gc.collect()
    before = rss()
    started = time.perf_counter()
    made = build(records)
    seconds = time.perf_counter() - started
    gc.collect()
    return made, before, rss() - before, seconds


def measure_new(records: Records, params: ranker.AlsParams) -> dict[str, Any]:
    trainer, before, grown, apply_seconds = built(new_store, records)
    store = trainer.interactions
    result: dict[str, Any] = {
        "rss": grown,
        "apply_seconds": apply_seconds,
        "users": store.users,
        "pairs": store.pairs,
        "events": store.events,
        "compactions": store.compactions,
        "longest_compaction": store.longest_compaction,
        **store.nbytes(),
    }
    started = time.perf_counter()
    item_ids, matrix = store.to_csr()
    result["csr_seconds"] = time.perf_counter() - started
    result["nnz"], result["items"] = matrix.nnz, len(item_ids)
    result["rss_peak_before_fit"] = peak_rss() - before
    started = time.perf_counter()
    ranker.fit_matrix(item_ids, matrix, params, "bench", time.time())
    result["fit_seconds"] = time.perf_counter() - started
    result["rss_peak_fit"] = peak_rss() - before
    return result


def measure_old(records: Records) -> dict[str, Any]:
    old, _, grown, apply_seconds = built(old_store, records)
    result: dict[str, Any] = {"rss": grown, "apply_seconds": apply_seconds}
    started = time.perf_counter()
    _, matrix = ranker.interaction_matrix(list(old.rows.values()))
    result["csr_seconds"] = time.perf_counter() - started
    result["nnz"] = matrix.nnz
    return result


class FakeModels:
    """What the trainer asks of the model store, in memory (no Redis in this bench)."""

    def __init__(self) -> None:
        self.retrain_requested = False

    async def next_version(self) -> str:
        return "bench"

    async def report_fit(self, version: str, iteration: int, iterations: int) -> None:
        pass

    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return True

    async def publish(self, version: str, blob: bytes) -> None:
        pass

    async def take_retrain_request(self) -> bool:
        requested, self.retrain_requested = self.retrain_requested, False
        return requested


def measure_background(records: Records, iterations: int) -> dict[str, Any]:
    """The real Trainer's fits, started by step() as the changelog tail does: one with the
    loop otherwise idle (its lag is what the fit costs the loop), one while records are
    applied in batches between yields (how fast the tail keeps applying during a fit)."""
    settings = Settings(als_iterations=iterations, new_item_interval=0)  # product's threads
    models = FakeModels()

    async def fit(trainer: Trainer, ingest: bool) -> dict[str, float]:
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                began = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - began - 0.01)

        ticking = asyncio.create_task(ticker())
        began = time.perf_counter()
        await trainer.step()
        assert trainer.fitting is not None
        applied = 0
        while not trainer.fitting.done():
            if not ingest:
                await asyncio.sleep(0.01)
                continue
            low = applied % len(records)
            batch = records[low : low + BATCH]
            for key, value in batch:
                trainer.apply(key, value)
            applied += len(batch)
            await asyncio.sleep(0)
        seconds = time.perf_counter() - began
        await trainer.step()  # collects the fit, raising its failure if any
        ticking.cancel()
        return {
            "seconds": seconds,
            "applied_per_s": applied / seconds,
            "lag_p50_ms": 1000 * float(np.percentile(lags, 50)),
            "lag_p99_ms": 1000 * float(np.percentile(lags, 99)),
            "lag_max_ms": 1000 * max(lags),
        }

    async def run() -> dict[str, Any]:
        trainer = Trainer(settings, models, owner="bench")  # type: ignore[arg-type]
        for key, value in records:
            trainer.apply(key, value)
        idle = await fit(trainer, ingest=False)
        models.retrain_requested = True
        ingesting = await fit(trainer, ingest=True)
        return {"threads": settings.als_threads, "idle": idle, "ingesting": ingesting}

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--rewrites", type=int, default=4, help="states written per user")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="ALS threads (0: all cores)")
    parser.add_argument("--background-iterations", type=int, default=3)
    parser.add_argument("--no-tracemalloc", action="store_true")
    args = parser.parse_args()

    print(
        f"generating: {args.users} users, {args.items} items, ~{args.pairs} pairs, "
        f"{args.rewrites} states per user ({os.cpu_count()} cores)",
        flush=True,
    )
    started = time.perf_counter()
    records, record_pairs, live = synthetic_changelog(
        args.users, args.items, args.pairs, args.rewrites
    )
    print(
        f"  {len(records)} records, {sum(len(v) for _, v in records) / len(records):.0f} "
        f"bytes each, {record_pairs} pairs in them, {live} live pairs at the end "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    params = ranker.AlsParams(
        factors=args.factors, iterations=args.iterations, threads=args.threads
    )

    new = in_child(lambda: measure_new(records, params))
    print("new (app.interactions) done", flush=True)
    old = in_child(lambda: measure_old(records))
    print("old (dict of dicts) done", flush=True)
    if not args.no_tracemalloc:
        new |= in_child(lambda: traced(new_store, records))
        old |= in_child(lambda: traced(old_store, records))
        print("tracemalloc runs done", flush=True)
    background = in_child(lambda: measure_background(records, args.background_iterations))
    puts = in_child(lambda: put_seconds(records))

    pairs = new["pairs"]
    assert new["nnz"] == old["nnz"], (new["nnz"], old["nnz"])
    held = new["pair_buffers"] + new["user_arrays"] + new["user_index"] + new["item_index"]
    new["put_per_s"], old["put_per_s"] = (len(records) / puts[name] for name in ("new", "old"))
    mib = 1 << 20
    print()
    print(f"live: {new['users']} users, {new['items']} items, {pairs} pairs, {new['nnz']} nonzero")
    print(f"{'':36} {'new (arrays)':>13} {'old (dicts)':>13} {'old / new':>10}")

    def line(label: str, key: str, scale: float = 1.0, form: str = ".1f") -> None:
        a, b = new[key] * scale, old[key] * scale
        print(f"{label:36} {a:>13{form}} {b:>13{form}} {b / a:>10.2f}")

    line("RSS growth, MiB", "rss", 1 / mib, ".0f")
    line("RSS growth, bytes/live pair", "rss", 1 / pairs)
    if "traced" in new:
        print("tracemalloc (new: without its arrays, which are mmap'ed and not traced):")
        line("  kept, bytes/live pair", "traced", 1 / pairs)
        line("  peak, bytes/live pair", "traced_peak", 1 / pairs)
    for result in (new, old):
        result["records_per_s"] = len(records) / result["apply_seconds"]
        result["pairs_per_s"] = record_pairs / result["apply_seconds"]
    line("apply, records/s", "records_per_s", form=".0f")
    line("apply, record pairs/s", "pairs_per_s", form=".0f")
    line("put alone (decoded), records/s", "put_per_s", form=".0f")
    line("CSR build, s", "csr_seconds", form=".2f")
    print()
    per_user = (new["user_arrays"] + new["user_index"]) / new["users"]
    per_item = new["item_index"] / new["items"]
    pair_bytes = new["pair_buffers"] / pairs
    print(
        f"new store (nbytes): pair buffers {pair_bytes:.2f} B/pair (8 B per pair, plus spare "
        f"capacity and garbage), per-user arrays {new['user_arrays'] / mib:.1f} MiB, user index "
        f"~{new['user_index'] / mib:.1f} MiB, item index ~{new['item_index'] / mib:.1f} MiB: "
        f"{held / pairs:.2f} B/pair in all; {new['compactions']} compactions, longest "
        f"{1000 * new['longest_compaction']:.0f} ms"
    )
    ceiling = 8 * GROWTH
    print(
        f"fixed costs: {per_user:.0f} B per user (id string, dict entry, list slot, per-user "
        f"arrays with their spare room), {per_item:.0f} B per item; with pair buffers at their "
        f"{ceiling:.0f} B/pair ceiling, 16 B/pair in all holds from "
        f"{per_user / (16 - ceiling):.0f} pairs per user (here: {pairs / new['users']:.1f})"
    )
    print(
        f"fit ({args.factors} factors, {args.iterations} iterations, threads={args.threads}): "
        f"{new['fit_seconds']:.1f} s; peak RSS growth {new['rss_peak_before_fit'] / mib:.0f} MiB "
        f"after the CSR build, {new['rss_peak_fit'] / mib:.0f} MiB during the fit"
    )
    idle, ingesting = background["idle"], background["ingesting"]
    print(
        f"background fit by Trainer.step ({args.background_iterations} iterations, "
        f"threads={background['threads']}, the product's default):"
    )
    print(
        f"  loop idle: {idle['seconds']:.1f} s, event-loop lag p50 {idle['lag_p50_ms']:.1f} ms, "
        f"p99 {idle['lag_p99_ms']:.1f} ms, max {idle['lag_max_ms']:.1f} ms"
    )
    print(
        f"  tail applying records meanwhile: {ingesting['seconds']:.1f} s, "
        f"{ingesting['applied_per_s']:.0f} records/s applied during the fit "
        f"(lag there is the apply batches' own: {BATCH} records between yields)"
    )


if __name__ == "__main__":
    main()
