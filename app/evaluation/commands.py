"""``python -m app evaluate``: offline evaluation of popularity and ALS on an events file.

Reads the file, splits it, fits and scores without Kafka or Redis; prints one JSON object on
stdout and progress on stderr. The ALS parameters and action weights are the product's
settings (``RECSYS_ALS_*``, ``RECSYS_ACTION_WEIGHTS``). See docs/EVALUATION.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import click
from faust.cli import AppCommand, option

from app import evaluation
from app.datasets import DatasetError, read_events
from app.faust_app import app, settings
from app.progress import Progress

_NUMBER_PAIR = re.compile(r"\[\s+([^\[\]{},\s]+),\s+([^\[\]{},\s]+)\s+\]")


def dumps(report: dict) -> str:
    """Indented JSON with each ``[low, high]`` interval kept on one line."""
    return _NUMBER_PAIR.sub(r"[\1, \2]", json.dumps(report, indent=2))


progress = Progress()
"""Messages and bars on stderr, so stdout holds only the JSON report."""


EVENTS_OPTION = option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="events CSV or the Online Retail CSV, plain or .gz",
)


def _models(_context: click.Context, _param: click.Parameter, text: str) -> list[str]:
    models = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(models) - set(evaluation.MODELS))
    if unknown or not models:
        raise click.BadParameter(
            f"expected a comma-separated list of {', '.join(evaluation.MODELS)}, got {text!r}",
            param_hint="--models",
        )
    return list(dict.fromkeys(models))


def run_evaluation(path: str, protocol: str, test_fraction: float, models: list[str]) -> dict:
    """Read, split, fit and score; the report as a dict."""
    started = time.perf_counter()
    events = read_events(path)
    progress(f"read {len(events)} events from {path} ({time.perf_counter() - started:.1f} s)")
    report = evaluation.evaluate(
        events, protocol, test_fraction, models, settings, progress=progress
    )
    progress(f"evaluated in {time.perf_counter() - started:.1f} s")
    return report


@app.command(
    EVENTS_OPTION,
    option(
        "--protocol",
        type=click.Choice(evaluation.PROTOCOLS),
        default="temporal",
        show_default=True,
    ),
    option(
        "--test-fraction",
        type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
        default=0.1,
        show_default=True,
    ),
    option(
        "--models",
        default=",".join(evaluation.MODELS),
        show_default=True,
        callback=_models,
        help="comma-separated models to evaluate",
    ),
)
async def evaluate(
    self: AppCommand, events_path: str, protocol: str, test_fraction: float, models: list[str]
) -> None:
    """Offline evaluation (HR@10, Recall@20, NDCG@10/20 with 95% CIs) printed as JSON."""
    try:
        report = await asyncio.to_thread(
            run_evaluation, events_path, protocol, test_fraction, models
        )
    except (DatasetError, ValueError) as error:
        progress(f"evaluate: {error}")
        raise SystemExit(1) from None
    sys.stdout.write(dumps(report) + "\n")
    sys.stdout.flush()
