"""``python -m app evaluate``, ``streaming-eval`` and ``tune``: the evaluations' commands.

``evaluate`` is the offline evaluation of popularity and ALS on an events file
(:mod:`app.evaluation.offline`): it reads the file, splits it, fits and scores without Kafka or
Redis. ``streaming-eval`` is the prequential evaluation (:mod:`app.evaluation.streaming`), in
process by default or, with ``--url``, through a running worker (:mod:`app.evaluation.pipeline`).
Both print one JSON object on stdout and progress on stderr; ``tune`` searches the ALS
parameters (:mod:`app.evaluation.tuning`) and prints its table of trials. The ALS parameters,
action weights and the rest are the product's settings (``RECSYS_*``), read as
``self.product.settings``. Importing this module only declares the commands
(:func:`app.cli.command`); ``python -m app`` imports it. See docs/EVALUATION.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from faust.cli import option

from app.cli import ProductCommand, command
from app.datasets import DatasetError, read_events
from app.evaluation import offline, tuning
from app.evaluation.pipeline import in_process_report, pipeline_report
from app.ops.progress import Progress
from app.retraining import RetrainPolicy, als_params
from app.settings import Settings

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


def fraction_option(name: str, default: float) -> Any:
    """An option for a share of the events, strictly between 0 and 1."""
    return option(
        name,
        type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
        default=default,
        show_default=True,
    )


def _models(_context: click.Context, _param: click.Parameter, text: str) -> list[str]:
    models = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(models) - set(offline.MODELS))
    if unknown or not models:
        raise click.BadParameter(
            f"expected a comma-separated list of {', '.join(offline.MODELS)}, got {text!r}",
            param_hint="--models",
        )
    return list(dict.fromkeys(models))


def run_evaluation(
    path: str, protocol: str, test_fraction: float, models: list[str], settings: Settings
) -> dict:
    """Read, split, fit and score; the report as a dict."""
    started = time.perf_counter()
    events = read_events(path)
    progress(f"read {len(events)} events from {path} ({time.perf_counter() - started:.1f} s)")
    report = offline.evaluate(events, protocol, test_fraction, models, settings, progress=progress)
    progress(f"evaluated in {time.perf_counter() - started:.1f} s")
    return report


@command(
    EVENTS_OPTION,
    option(
        "--protocol",
        type=click.Choice(offline.PROTOCOLS),
        default="temporal",
        show_default=True,
    ),
    fraction_option("--test-fraction", 0.1),
    option(
        "--models",
        default=",".join(offline.MODELS),
        show_default=True,
        callback=_models,
        help="comma-separated models to evaluate",
    ),
)
async def evaluate(
    self: ProductCommand,
    events_path: str,
    protocol: str,
    test_fraction: float,
    models: list[str],
) -> None:
    """Offline evaluation (HR@10, Recall@20, NDCG@10/20 with 95% CIs) printed as JSON."""
    settings = self.product.settings
    try:
        report = await asyncio.to_thread(
            run_evaluation, events_path, protocol, test_fraction, models, settings
        )
    except (DatasetError, ValueError) as error:
        progress(f"evaluate: {error}")
        raise SystemExit(1) from None
    sys.stdout.write(dumps(report) + "\n")
    sys.stdout.flush()


@command(
    EVENTS_OPTION,
    fraction_option("--warmup-fraction", 0.8),
    option(
        "--retrain-interval",
        type=click.FloatRange(min=0.0),
        default=None,
        help="stream seconds between scheduled refits (default RECSYS_RETRAIN_INTERVAL; 0: off)",
    ),
    option("--limit", type=click.IntRange(min=1), help="replay only the first N stream events"),
    option("--url", help="replay through the worker at this URL (app.evaluation.pipeline)"),
    option("--out", type=click.Path(dir_okay=False), help="also write the JSON report here"),
)
async def streaming_eval(
    self: ProductCommand,
    events_path: str,
    warmup_fraction: float,
    retrain_interval: float | None,
    limit: int | None,
    url: str | None,
    out: str | None,
) -> None:
    """Streaming (prequential) HR@10 and NDCG@10 of product, no-refit, frozen and popularity.

    With --url, through the running worker at URL, which must be new (its own app id, topics
    and Redis prefix, no events yet); run the command with the worker's RECSYS_ environment.
    """
    settings = self.product.settings
    try:
        events = await asyncio.to_thread(read_events, events_path)
        if url is None:
            policy = RetrainPolicy.of(settings)
            if retrain_interval is not None:
                policy = dataclasses.replace(policy, interval=retrain_interval)
            report = await asyncio.to_thread(
                in_process_report, events, warmup_fraction, policy, limit, settings, progress
            )
        else:
            report = await pipeline_report(
                events, warmup_fraction, limit or 300, url, settings, progress
            )
    except (DatasetError, ValueError) as error:
        progress(f"streaming-eval: {error}")
        raise SystemExit(1) from None
    text = json.dumps(report, indent=1)
    if out:
        await asyncio.to_thread(Path(out).write_text, text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _numbers(kind: type) -> Callable[[click.Context, click.Parameter, str], tuple]:
    """A click callback reading a comma-separated list of positive numbers of one kind."""

    def parse(_context: click.Context, param: click.Parameter, text: str) -> tuple:
        try:
            values = tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            values = ()
        if not values or min(values) < 0 or (kind is int and min(values) < 1):
            raise click.BadParameter(
                f"expected comma-separated {'whole ' if kind is int else ''}numbers "
                f"{'of at least 1' if kind is int else 'of at least 0'}, got {text!r}",
                param=param,
            )
        return tuple(dict.fromkeys(values))

    return parse


def space_option(name: str, kind: type) -> Any:
    """An option for the values a search tries of one ALS parameter."""
    field = name.removeprefix("--")
    default = ",".join(f"{value:g}" for value in getattr(tuning.SearchSpace(), field))
    return option(name, default=default, show_default=True, callback=_numbers(kind))


def env_file_text(outcome: tuning.Outcome, events_path: str, out: str) -> str:
    """The env file ``tune`` writes: how the settings were found, then their lines."""
    chosen = "best trial" if outcome.recommended == outcome.best else "current settings, kept"
    metric = outcome.metric
    header = [
        f"# python -m app tune --events {events_path} at "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {len(outcome.trials)} trials",
        f"# {chosen}; test {metric} {outcome.best_test[metric]:.4f} (best) against "
        f"{outcome.current_test[metric]:.4f} (current)",
        f"# run a worker with it: RECSYS_ENV_FILE={out} python -m app worker",
    ]
    return "\n".join(header + tuning.env_lines(outcome.recommended)) + "\n"


@command(
    EVENTS_OPTION,
    option("--trials", type=click.IntRange(min=1), default=24, show_default=True),
    option(
        "--max-seconds",
        type=click.FloatRange(min=0.0, min_open=True),
        default=900.0,
        show_default=True,
        help="no trial starts after this many seconds",
    ),
    option("--metric", type=click.Choice(offline.METRICS), default="NDCG@10", show_default=True),
    fraction_option("--test-fraction", 0.1),
    space_option("--factors", int),
    space_option("--regularization", float),
    space_option("--alpha", float),
    space_option("--iterations", int),
    option("--seed", type=int, default=0, show_default=True, help="order of the trials"),
    option(
        "--out",
        type=click.Path(dir_okay=False),
        default="tuned.env",
        show_default=True,
        help="where to write the chosen settings as RECSYS_ALS_* lines",
    ),
)
async def tune(
    self: ProductCommand,
    events_path: str,
    trials: int,
    max_seconds: float,
    metric: str,
    test_fraction: float,
    factors: tuple[int, ...],
    regularization: tuple[float, ...],
    alpha: tuple[float, ...],
    iterations: tuple[int, ...],
    seed: int,
    out: str,
) -> None:
    """Search ALS factors, regularization, alpha and iterations on a temporal split, print the
    trials, and write the settings to run as env lines (RECSYS_ENV_FILE reads them)."""
    settings = self.product.settings
    space = tuning.SearchSpace(factors, regularization, alpha, iterations)
    try:
        events = await asyncio.to_thread(read_events, events_path)
        outcome = await asyncio.to_thread(
            tuning.tune,
            events,
            als_params(settings),
            settings.weight,
            space,
            tuning.Budget(trials, max_seconds),
            metric,
            test_fraction,
            seed,
            progress,
        )
    except (DatasetError, ValueError) as error:
        progress(f"tune: {error}")
        raise SystemExit(1) from None
    await asyncio.to_thread(Path(out).write_text, env_file_text(outcome, events_path, out))
    report = [tuning.trial_table(outcome), "", *tuning.verdict(outcome), "", f"wrote {out}:"]
    sys.stdout.write("\n".join(report + tuning.env_lines(outcome.recommended)) + "\n")
    sys.stdout.flush()
