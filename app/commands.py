"""Command-line tools beside ``worker``: ``create-topics``, ``feed`` and ``retrain``."""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Iterator
from itertools import islice

import aiohttp
from faust.cli import AppCommand, argument, option

from app import agents, web  # noqa: F401 - registers the agents, timers and views
from app import evaluate_command as _evaluate  # noqa: F401 - registers the evaluate command
from app import page as _page  # noqa: F401 - registers the demo page at /
from app import replay as _replay  # noqa: F401 - registers replay and its catch-up timer
from app import streaming_eval_command as _streaming  # noqa: F401 - registers streaming-eval
from app.faust_app import app, models, settings
from app.model_store import version_sequence
from app.progress import Progress
from app.topics import ALL_TOPICS


@app.command()
async def create_topics(self: AppCommand) -> None:
    """Create user-actions and its dead-letter topic with the configured partitions."""
    await self.app.producer.maybe_start()
    for topic in ALL_TOPICS:
        await topic.maybe_declare()
        self.say(f"topic {topic.get_topic_name()}: {settings.partitions} partitions")
    await self.app.producer.stop()


RETRAIN_POLL_SECONDS = 0.25


@app.command(
    option("--wait/--no-wait", default=True, show_default=True, help="wait for the new model"),
    option("--max-wait", default=600.0, show_default=True, help="seconds to wait"),
)
async def retrain(self: AppCommand, wait: bool, max_wait: float) -> None:
    """Ask the deployment's trainer for a full fit now (what POST /admin/retrain does), and
    follow it: a bar of its ALS iterations, then the version it published."""
    before = await models.current_version()
    handed_out = await models.last_sequence()
    await models.request_retrain()
    self.say(f"retrain requested (current model: {before})")
    if not wait:
        return
    deadline = time.monotonic() + max_wait
    with Progress().bar("ALS fit", unit="iteration") as bar:
        while time.monotonic() < deadline:
            fit = await models.fit_progress()
            if fit is not None and version_sequence(fit["version"]) > handed_out:
                bar.total = fit["iterations"]
                bar.update(fit["iteration"] - bar.n)  # n stays 0 on a disabled bar: display only
                current = await models.current_version()
                if current is not None and version_sequence(current) >= version_sequence(
                    fit["version"]
                ):
                    bar.close()
                    self.say(f"model {fit['version']} published")
                    return
            await asyncio.sleep(RETRAIN_POLL_SECONDS)
    raise SystemExit(f"no new model within {max_wait:.0f} s: is a worker (with its trainer) up?")


def read_events(path: str) -> Iterator[dict[str, str]]:
    """Rows of an events CSV (``user_id,item_id,action,timestamp``; extra columns ignored)."""
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield {field: row[field] for field in ("user_id", "item_id", "action", "timestamp")}


@app.command(
    argument("path"),
    option("--url", default=f"http://{settings.web_host}:{settings.web_port}", show_default=True),
    option("--batch", default=500, show_default=True, help="events per request"),
)
async def feed(self: AppCommand, path: str, url: str, batch: int) -> None:
    """Post the events of a CSV file to a running worker's POST /events."""
    events = read_events(path)
    sent = 0
    async with aiohttp.ClientSession() as session:
        with Progress().bar("fed", unit="event") as bar:
            while chunk := list(islice(events, batch)):
                async with session.post(f"{url}/events", json={"events": chunk}) as response:
                    body = await response.json()
                    if response.status != 202:
                        raise SystemExit(
                            f"feed stopped after {sent} events: {response.status} {body}"
                        )
                sent += len(chunk)
                bar.update(len(chunk))
    self.say(f"fed {sent} events from {path} to {url}")
