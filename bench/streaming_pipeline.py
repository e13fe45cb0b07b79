"""Streaming evaluation through the real pipeline on a slice, checked against the in-process
simulation of the same slice (``python -m app streaming-eval --url``).

Starts its own worker (harness/worker.py) with the product's settings except a 50 ms fold-in
tick (it only shortens the wait for each event to show) and new-item folds off (they run on
wall time in the worker and on stream time in the simulation, so their timing cannot match).
The whole warm-up goes in over HTTP, the trainer fits on it, then ``--limit`` stream events
are replayed one probe at a time. Prints the HR@10 and NDCG@10 of both modes and their
agreement; writes bench/results/streaming_pipeline.json.

    .venv/bin/python bench/streaming_pipeline.py --limit 500     # about 6 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

from _support import machine, own_worker, write_report

from app.datasets import read_events
from app.evaluation.pipeline import pipeline_report
from app.settings import Settings

DATA = "/work/shared/datasets/online-retail/online_retail.csv.gz"


async def main(args: argparse.Namespace) -> None:
    events = read_events(args.events)
    overrides = {"RECSYS_FOLD_IN_INTERVAL": "0.05", "RECSYS_NEW_ITEM_INTERVAL": "1e9"}
    with own_worker("streaming", **overrides) as worker:
        settings = Settings.from_env(worker.env)
        report = await pipeline_report(events, 0.8, args.limit, worker.url, settings)
    report["machine"] = machine()
    print(f"{'mode':11} {'variant':11} {'probes':>6} {'HR@10':>7} {'NDCG@10':>8}")
    for mode in ("pipeline", "in_process"):
        summary = report[mode]
        for variant, metrics in summary["variants"].items():
            print(
                f"{mode:11} {variant:11} {summary['probes']:>6} "
                f"{metrics['HR@10']['mean']:7.4f} {metrics['NDCG@10']['mean']:8.4f}"
            )
    for variant, figures in report["agreement"].items():
        print(
            f"agreement {variant}: same hit/miss {figures['same_hit']:.4f}, same top 10 "
            f"{figures['same_top10']:.4f} of {figures['probes']} probes"
        )
    print(f"pipeline replay took {report['pipeline_wall_seconds']} s")
    write_report(report, args.out, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default=DATA)
    parser.add_argument("--limit", type=int, default=500, help="stream events to replay")
    parser.add_argument("--out", default="streaming_pipeline.json")
    asyncio.run(main(parser.parse_args()))
