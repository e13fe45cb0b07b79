"""Serving: ``GET /recommend/{user}?n=10`` latency at a fixed 1,000 requests/s, and the highest
rate one worker sustains.

Starts its own workers (harness/worker.py), feeds each the bundled sample and waits until its
200 users have personal lists in Redis (bench/freshness.py's ``prepare``); every request is then
a Redis hit for a random one of them. Load comes from wrk (Debian package ``wrk``:
``apt-get install -y wrk``; bench/serving.lua), one thread, on the same 2 cores:

* **Fixed rate**: 50 connections, together about ``rate`` requests a second (``--rates``,
  default 1,000), with two arrival patterns. ``paced``: each connection pauses 50 / ``rate``
  seconds between its requests (wrk's ``delay()``); the connections fall into step and fire in
  bursts. ``poisson``: each pause is drawn from an exponential distribution with that mean, so
  the requests arrive independently, as separate visitors' do. wrk times each request from its
  send; a stall slows the sending, which the achieved rate shows. (wrk2 would keep a strict
  schedule but is not packaged for Debian.)
* **Warm-up**: 10 s of reads, discarded, before the measured runs of each worker.
* **Baseline in the same run**: the fixed-rate runs are repeated against a worker started with
  ``RECSYS_GC_FREEZE=false``, whose full garbage collections walk every start-up object.
* **Highest rate**: closed loop, as fast as responses come, with 1, 4 and 16 connections.

    .venv/bin/python bench/serving.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

from _support import RESULTS, machine, own_worker, run_wrk, write_report
from freshness import load_sample, prepare

from harness.worker import WorkerProcess

LUA = Path(__file__).with_name("serving.lua")


def wrk(
    url: str,
    users_file: Path,
    connections: int,
    seconds: int,
    rate: int = 0,
    arrivals: str = "paced",
) -> dict[str, object]:
    summary, _ = run_wrk(
        url,
        LUA,
        connections,
        seconds,
        {
            "USERS": str(users_file),
            "RATE": str(rate),
            "CONNECTIONS": str(connections),
            "ARRIVALS": arrivals,
        },
    )
    return {
        "target_per_s": rate or None,
        "arrivals": arrivals if rate else "closed loop",
        "connections": connections,
        "requests_per_s": round(summary["requests"] / summary["seconds"]),
        **summary,
    }


ARRIVALS = ("paced", "poisson")
WARM_UP_SECONDS = 10


async def fixed_rate_runs(
    worker: WorkerProcess, users_file: Path, args: argparse.Namespace
) -> list[dict[str, object]]:
    await prepare(worker.url, worker.redis_prefix, load_sample())
    # Discarded: reads of lists from an older model re-rank them, and the trainer may still
    # publish once after the feed; the measured runs see the steady state.
    await asyncio.to_thread(wrk, worker.url, users_file, 1, WARM_UP_SECONDS)
    return [
        await asyncio.to_thread(wrk, worker.url, users_file, 50, int(args.seconds), rate, arrivals)
        for rate in args.rates
        for arrivals in ARRIVALS
    ]


async def main(args: argparse.Namespace) -> None:
    report: dict[str, object] = {"machine": machine()}
    users = sorted({row["user_id"] for row in load_sample()})
    users_file = RESULTS / "serving-users.txt"
    users_file.parent.mkdir(parents=True, exist_ok=True)
    users_file.write_text("\n".join(users) + "\n")
    with own_worker("serving-baseline", RECSYS_GC_FREEZE="false") as baseline:
        report["baseline_without_gc_freeze"] = await fixed_rate_runs(baseline, users_file, args)
    with own_worker("serving") as worker:
        report["fixed_rate"] = await fixed_rate_runs(worker, users_file, args)
        report["closed_loop"] = [
            await asyncio.to_thread(wrk, worker.url, users_file, c, int(args.seconds))
            for c in (1, 4, 16)
        ]
    print(
        f"{'worker':>14} {'target/s':>8} {'arrivals':>11} {'conns':>5} {'req/s':>6} "
        f"{'non-2xx':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'max ms':>7}"
    )
    rows = [("no gc freeze", run) for run in report["baseline_without_gc_freeze"]]
    rows += [("product", run) for run in report["fixed_rate"] + report["closed_loop"]]
    for label, run in rows:
        ms = run["latency_ms"]
        print(
            f"{label:>14} {run['target_per_s'] or 'max':>8} {run['arrivals']:>11} "
            f"{run['connections']:>5} {run['requests_per_s']:>6} {run['non_2xx']:>7} "
            f"{ms['p50']:7.2f} {ms['p90']:7.2f} {ms['p99']:7.2f} {ms['p99.9']:8.2f} "
            f"{ms['max']:7.2f}"
        )
    write_report(report, args.out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1000],
        help="fixed request rates, one run each",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default="serving.json")
    asyncio.run(main(parser.parse_args()))
