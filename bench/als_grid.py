"""A small ALS hyper-parameter grid on an events file, scored like ``python -m app evaluate``.

Usage (from the repository root):

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/als_grid.py \\
        --events /work/shared/datasets/online-retail/online_retail.csv.gz --protocol temporal

The split is made once; every configuration is fitted on the same training rows (single-threaded
fits, ``--jobs`` of them at a time) and scored on the same users with the product's action
weights. Then the product's default and a candidate (``--compare``, else the grid's best by
NDCG@10) are refitted with four more random seeds, to show how much of a difference between
configurations is seed noise, and the candidate's per-user gain over the default gets a paired
bootstrap interval. Prints a Markdown table and writes JSON to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from app import ranker
from app.datasets import read_events
from app.evaluation import offline
from app.retraining import als_params
from app.settings import Settings

DEFAULT_EVENTS = "/work/shared/datasets/online-retail/online_retail.csv.gz"
FACTORS = (32, 64, 128)
REGULARIZATION = (0.01, 0.05, 0.1)
ALPHA = (1.0, 5.0, 10.0, 20.0)
EXTRA_SEEDS = (43, 44, 45, 46)

_TASK: offline.Task | None = None  # set before the worker processes fork


def _run(params: ranker.AlsParams) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """One configuration's summary row and per-user metric values."""
    assert _TASK is not None
    started = time.perf_counter()
    per_user, fallbacks = offline.score_als(_TASK, params)
    summary = offline.summarize(per_user, _TASK.indices)
    row = {
        "factors": params.factors,
        "regularization": params.regularization,
        "alpha": params.alpha,
        "random_seed": params.random_seed,
        **summary,
        "popularity_fallbacks": fallbacks,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return row, per_user


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def _key(config: dict[str, object]) -> tuple:
    """(factors, regularization, alpha) of a result row or of ``asdict(AlsParams)``."""
    return (config["factors"], config["regularization"], config["alpha"])


def _table(rows: list[dict[str, object]], marks: dict[tuple, str]) -> str:
    lines = [
        "| factors | reg | alpha | HR@10 | Recall@20 | NDCG@10 (95% CI) | NDCG@20 | s | note |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        low, high = row["ci95"]["NDCG@10"]
        lines.append(
            f"| {row['factors']} | {row['regularization']} | {row['alpha']:g} | "
            f"{row['HR@10']:.4f} | {row['Recall@20']:.4f} | "
            f"{row['NDCG@10']:.4f} ({low:.4f}-{high:.4f}) | {row['NDCG@20']:.4f} | "
            f"{row['seconds']:.1f} | {marks.get(_key(row), '')} |"
        )
    return "\n".join(lines)


def _seed_spread(rows: list[dict[str, object]]) -> dict[str, object]:
    spread: dict[str, object] = {"seeds": [row["random_seed"] for row in rows]}
    for metric in offline.METRICS:
        values = [row[metric] for row in rows]
        spread[metric] = {
            "mean": round(statistics.mean(values), 4),
            "sd": round(statistics.stdev(values), 4),
            "min": min(values),
            "max": max(values),
        }
    return spread


def main() -> None:
    global _TASK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default=DEFAULT_EVENTS)
    parser.add_argument("--protocol", choices=offline.PROTOCOLS, default="temporal")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--factors", type=_ints, default=FACTORS, help="e.g. 32,64,128")
    parser.add_argument("--regularization", type=_floats, default=REGULARIZATION)
    parser.add_argument("--alpha", type=_floats, default=ALPHA)
    parser.add_argument(
        "--compare",
        type=_floats,
        help="factors,regularization,alpha to compare with the default (default: the best)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="fits run at the same time")
    parser.add_argument("--out", help="JSON output (default bench/results/als_grid*.json)")
    args = parser.parse_args()
    suffix = "" if args.protocol == "temporal" else f"_{args.protocol}"
    out = Path(args.out or f"bench/results/als_grid{suffix}.json")

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    settings = Settings()
    events = read_events(args.events)
    _TASK = offline.prepare(events, args.protocol, args.test_fraction, settings.weight)
    say(f"{args.protocol} split: {_TASK.describe()}, {len(_TASK.users)} users tested")
    popularity = offline.summarize(offline.score_popularity(_TASK), _TASK.indices)

    default = als_params(settings)
    grid = [
        replace(default, factors=f, regularization=r, alpha=a)
        for f, r, a in itertools.product(args.factors, args.regularization, args.alpha)
    ]
    rows: list[dict[str, object]] = []
    per_user: dict[tuple, dict[str, np.ndarray]] = {}  # of the seed-42 fits
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row, values in pool.map(_run, grid):
            rows.append(row)
            per_user[_key(row)] = values
            say(
                f"[{len(rows)}/{len(grid)}] factors {row['factors']} reg {row['regularization']} "
                f"alpha {row['alpha']:g}: NDCG@10 {row['NDCG@10']:.4f} HR@10 {row['HR@10']:.4f} "
                f"({row['seconds']:.1f} s)"
            )
        best = max(rows, key=lambda row: row["NDCG@10"])
        if args.compare:
            factors, regularization, alpha = args.compare
            candidate = replace(
                default, factors=int(factors), regularization=regularization, alpha=alpha
            )
        else:
            candidate = replace(
                default,
                factors=best["factors"],
                regularization=best["regularization"],
                alpha=best["alpha"],
            )
        say(f"candidate {candidate}: refitting it and the default with more seeds")
        extra = [replace(p, random_seed=s) for p in (default, candidate) for s in EXTRA_SEEDS]
        extra += [p for p in (default, candidate) if _key(asdict(p)) not in per_user]
        reruns = []
        for row, values in pool.map(_run, extra):
            reruns.append(row)
            if row["random_seed"] == default.random_seed:
                per_user[_key(row)] = values

    seeds = {}
    for name, params in (("default", default), ("candidate", candidate)):
        same = [row for row in rows + reruns if _key(row) == _key(asdict(params))]
        seeds[name] = {"params": asdict(params), **_seed_spread(same)}
    pair = (per_user[_key(asdict(candidate))], per_user[_key(asdict(default))])
    difference = offline.summarize(
        {m: pair[0][m] - pair[1][m] for m in offline.METRICS}, _TASK.indices
    )
    marks = {_key(asdict(default)): "default", _key(best): "**best**"}
    if _key(asdict(default)) == _key(best):
        marks[_key(best)] = "default, **best**"
    if _key(asdict(candidate)) not in marks:
        marks[_key(asdict(candidate))] = "candidate"
    wall = time.perf_counter() - started

    print("popularity: " + ", ".join(f"{m} {popularity[m]:.4f}" for m in offline.METRICS))
    print(_table(rows, marks))
    for name, spread in seeds.items():
        print(
            f"{name} {_key(spread['params'])} over seeds {spread['seeds']}: "
            + ", ".join(
                f"{m} {spread[m]['mean']:.4f} ± {spread[m]['sd']:.4f}" for m in offline.METRICS
            )
        )
    print(
        f"candidate minus default (seed {default.random_seed}, paired bootstrap 95% CI): "
        + ", ".join(
            f"{m} {difference[m]:+.4f} ({difference['ci95'][m][0]:+.4f} to "
            f"{difference['ci95'][m][1]:+.4f})"
            for m in offline.METRICS
        )
    )
    print(f"wall time {wall:.0f} s with {args.jobs} jobs")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "events": args.events,
                "protocol": args.protocol,
                "test_fraction": args.test_fraction,
                "users": len(_TASK.users),
                "split": _TASK.describe(),
                "iterations": default.iterations,
                "action_weights": dict(settings.action_weights),
                "popularity": popularity,
                "grid": rows,
                "seeds": seeds,
                "candidate_minus_default": difference,
                "wall_seconds": round(wall, 1),
                "jobs": args.jobs,
            },
            indent=2,
        )
        + "\n"
    )
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
