"""Command-line tools beside ``worker``: ``create-topics``, ``feed``, ``retrain``, ``replay``,
``catch-up``, ``dump`` and ``restore``.

Commands are declared here with :func:`command` and bound to one wired :class:`Product` by
:func:`add_commands`, which ``python -m app`` calls; a command reaches the product's settings,
stores and topics as ``self.product``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import click
import orjson
from aiokafka.errors import KafkaError
from faust.cli import AppCommand, argument, option
from faust.cli.base import cli as faust_cli
from redis.exceptions import RedisError

from app import backup
from app import play as shop_play
from app import replay as replaying
from app.datasets import DatasetError, event_json, iter_events, iter_items
from app.ops.progress import Progress
from app.security import client_headers
from app.stores.model import version_sequence
from app.topics import RESTORE_HEADER
from app.validation import InvalidEvent, parse_timestamp

if TYPE_CHECKING:
    from app.factory import Product

Handler = Callable[..., Awaitable[None]]
COMMANDS: list[tuple[Handler, tuple[Any, ...]]] = []
"""Every command declared with :func:`command`, in order, with its click options."""


class ProductCommand(AppCommand):
    """A Faust command bound to a wired product."""

    abstract: ClassVar[bool] = True  # a base, not a command of its own
    product: ClassVar[Product]


def command(*options: Any) -> Callable[[Handler], Handler]:
    """Declare a command (its click options as for ``app.command``); see :func:`add_commands`."""

    def declare(handler: Handler) -> Handler:
        COMMANDS.append((handler, options))
        return handler

    return declare


ROOT_HELP = """The real-time recommender: Faust's command line on a worker wired from the
RECSYS_ environment variables (see docs/OPERATIONS.md, Configuration).

\b
The product's commands:
  worker          run a worker: the stream, the lists, the HTTP API
  create-topics   create user-actions, its dead-letter topic and items
  feed            post an events file to a running worker
  load-items      post a catalogue file (titles, categories) to a running worker
  play            replay the demo history through a running worker at a chosen rate
  retrain         ask for a full fit now and follow it
  rollback        serve the model published before the current one again
  replay          rebuild every derived state from the raw log
  catch-up        follow the workers re-applying the log after a replay
  dump            write model, catalogue, users and popularity to a folder
  restore         bring a fresh deployment to a dump's state
  evaluate        offline HR@10, Recall@20 and NDCG of the model against baselines
  streaming-eval  prequential HR@10 and NDCG@10 of the streaming pipeline
  tune            search ALS parameters on a temporal split, write them as env lines

\b
Faust's own, safe here (they only read): agents, tables, models, model, completion.
Faust's own, not for this product: send (skips POST /events' checks at the door; use
feed), reset (deletes a worker's tables outside a replay; use replay), clean-versions and
livecheck (unused here).
"""


def add_commands(product: Product) -> None:
    """Register every declared command on the product's Faust app, and say in ``--help``
    which commands are the product's and which of Faust's are safe."""
    for handler, options in COMMANDS:
        product.faust.command(*options, base=ProductCommand, product=product)(handler)
    faust_cli.help = ROOT_HELP


@command()
async def create_topics(self: ProductCommand) -> None:
    """Create user-actions, its dead-letter topic, items and the user-state changelog with the
    configured partitions. The changelog too: a worker that creates it itself can subscribe
    before every broker knows it, and a consumer given metadata without it sees 0 partitions
    (its agent fails on the first table write) until its next metadata refresh, 5 minutes on."""
    await self.app.producer.maybe_start()
    for topic in (*self.product.topics.all, self.product.user_state.changelog_topic):
        await topic.maybe_declare()
        self.say(f"topic {topic.get_topic_name()}: {self.product.settings.partitions} partitions")
    await self.app.producer.stop()


RETRAIN_POLL_SECONDS = 0.25


@command(
    option("--wait/--no-wait", default=True, show_default=True, help="wait for the new model"),
    option("--max-wait", default=600.0, show_default=True, help="seconds to wait"),
)
async def retrain(self: ProductCommand, wait: bool, max_wait: float) -> None:
    """Ask the deployment's trainer for a full fit now (what POST /admin/retrain does), and
    follow it: a bar of its ALS iterations, then the version it published."""
    models = self.product.stores.models
    before = await models.current_version()
    handed_out = await models.last_sequence()
    await models.request_retrain()
    self.say(f"retrain requested (current model: {before})")
    if not wait:
        return
    deadline = time.monotonic() + max_wait
    with Progress().bar("ALS fit", unit="iteration") as bar:
        while time.monotonic() < deadline:
            # The version first: a fit's last report lands before its model is published.
            current = await models.current_version()
            fit = await models.fit_progress()
            if fit is not None and version_sequence(fit["version"]) > handed_out:
                bar.total = fit["iterations"]
                bar.update(fit["iteration"] - bar.n)  # n stays 0 on a disabled bar: display only
                if current is not None and version_sequence(current) >= version_sequence(
                    fit["version"]
                ):
                    bar.close()
                    self.say(f"model {fit['version']} published")
                    return
            await asyncio.sleep(RETRAIN_POLL_SECONDS)
    raise SystemExit(f"no new model within {max_wait:.0f} s: is a worker (with its trainer) up?")


@command()
async def rollback(self: ProductCommand) -> None:
    """Serve the model published before the current one again (what POST /admin/rollback
    does); the workers switch within a second and the trainer continues from it."""
    try:
        version = await self.product.stores.models.roll_back()
    except RedisError as error:
        raise SystemExit(f"rollback failed: {error}") from None
    if version is None:
        raise SystemExit("no earlier model is kept to roll back to")
    self.say(f"model {version} is current again")


async def post_all(
    self: ProductCommand, url: str | None, path: str, records: Iterator[dict], batch: int
) -> tuple[str, int]:
    """POST ``records`` to a running worker's ``path`` (``/events`` or ``/items``) in batches,
    with RECSYS_API_KEY when set; stop at the first answer that is not 202. Returns the URL
    and how many were accepted."""
    settings = self.product.settings
    url = url or settings.web_url
    noun = path.strip("/")
    sent = 0
    async with aiohttp.ClientSession(headers=client_headers(settings)) as session:
        with Progress().bar("posted", unit=noun.rstrip("s")) as bar:
            try:
                while chunk := list(islice(records, batch)):
                    async with session.post(f"{url}{path}", json={noun: chunk}) as response:
                        reply = await response.json()
                        if response.status != 202:
                            raise SystemExit(
                                f"stopped after {sent} {noun}: {response.status} {reply}"
                            )
                    sent += len(chunk)
                    bar.update(len(chunk))
            except DatasetError as error:
                raise SystemExit(f"stopped after {sent} {noun}: {error}") from None
    return url, sent


@command(
    argument("path", type=click.Path(exists=True, dir_okay=False)),
    option("--url", default=None, help="the worker's URL (default: this worker's web address)"),
    option("--batch", default=500, show_default=True, help="events per request"),
)
async def feed(self: ProductCommand, path: str, url: str | None, batch: int) -> None:
    """Post the events of a file (an events CSV or Online Retail, plain or .gz, the formats
    ``evaluate`` reads) to a running worker's POST /events, with RECSYS_API_KEY when set."""
    events = (event_json(event) for event in iter_events(path))
    url, sent = await post_all(self, url, "/events", events, batch)
    self.say(f"fed {sent} events from {path} to {url}")


@command(
    argument("path", type=click.Path(exists=True, dir_okay=False)),
    option("--url", default=None, help="the worker's URL (default: this worker's web address)"),
    option("--batch", default=500, show_default=True, help="items per request"),
)
async def load_items(self: ProductCommand, path: str, url: str | None, batch: int) -> None:
    """Post a catalogue CSV (item_id, then any of title, description, categories and tags,
    the last two |-separated) to a running worker's POST /items."""
    url, sent = await post_all(self, url, "/items", iter_items(path), batch)
    self.say(f"loaded {sent} items from {path} to {url}")


@command(
    option("--rate", default=20.0, show_default=True, help="events per second (1 to 1000)"),
    option("--url", default=None, help="the worker's URL (default: this worker's web address)"),
    option("--path", default=None, help="the history to play (default: RECSYS_DEMO_EVENTS)"),
)
async def play(self: ProductCommand, rate: float, url: str | None, path: str | None) -> None:
    """Replay a history (the bundled sample) through a running worker's POST /events at
    --rate events/s, moved in time to continue from the shop's clock: what the demo page's
    Play button does, from a terminal."""
    if not 1 <= rate <= 1000:
        raise SystemExit("--rate: must be from 1 to 1000 events per second")
    settings = self.product.settings
    url = url or settings.web_url
    try:
        history = shop_play.load_history(path or settings.demo_events)
        async with aiohttp.ClientSession(headers=client_headers(settings)) as session:
            async with session.get(f"{url}/popular?n=1") as response:
                if response.status != 200:
                    raise SystemExit(f"GET /popular answered {response.status}: is {url} a worker?")
                shop_clock = (await response.json())["as_of"]
            events = shop_play.retimed(history, shop_clock, time.time())
            with Progress().bar("played", len(events), unit="event") as bar:
                done = 0
                async for sent in shop_play.post_at_rate(session, url, events, rate):
                    bar.update(sent - done)
                    done = sent
    except (shop_play.PlayRefused, aiohttp.ClientError) as error:
        raise SystemExit(f"play stopped: {error}") from None
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(shop_clock))
    self.say(
        f"played {len(events)} events to {url} at {rate:g}/s, "
        f"continuing from the shop's clock {shop_clock:.3f} ({moment})"
    )


@command(
    option(
        "--since",
        default=None,
        help="rebuild from the events logged at or after this time (ISO-8601 or unix seconds); "
        "default: from the beginning of the log",
    ),
    option(
        "--data-dir",
        "data_dirs",
        multiple=True,
        help="a worker data folder whose tables to delete (repeat for several workers); "
        "default: RECSYS_DATA_DIR",
    ),
)
async def replay(self: ProductCommand, since: str | None, data_dirs: tuple[str, ...]) -> None:
    """Rebuild tables, model and Redis from the raw user-actions log (workers must be stopped)."""
    try:
        since_seconds = None if since is None else parse_timestamp(since)
    except InvalidEvent as error:
        raise SystemExit(f"--since: {error.problem}") from None
    folders = [Path(folder) for folder in data_dirs] or [Path(self.product.settings.data_dir)]
    try:
        await replaying.reset(self.product, since_seconds, folders, self.say)
    except (replaying.ReplayRefused, KafkaError, RedisError, OSError) as error:
        raise SystemExit(f"replay stopped: {error}") from None
    self.say(
        "done: start the workers with the new configuration to re-apply the log; "
        "'python -m app catch-up' follows their progress"
    )


CATCH_UP_POLL_SECONDS = 1.0


@command()
async def catch_up(self: ProductCommand) -> None:
    """Follow the workers re-applying the log after a replay: a bar of the records re-applied,
    until every partition has reached where the log ended at the replay."""
    stores = self.product.stores
    raw = await stores.redis.get(stores.keys.replay_marker)
    if raw is None:
        raise SystemExit(
            f"no replay in the last {replaying.MARKER_TTL_SECONDS // 86400} days: nothing to follow"
        )
    marker = orjson.loads(raw)
    starts = {int(p): offset for p, offset in marker["starts"].items()}
    ends = {int(p): offset for p, offset in marker["ends"].items()}
    total = sum(ends[p] - starts[p] for p in starts)
    with Progress().bar("re-applied", total, "record") as bar:
        done = 0
        async for reapplied in replaying.follow_reapplied(self.product.settings, starts, ends):
            bar.update(reapplied - done)
            done = reapplied
            if done < total:
                await asyncio.sleep(CATCH_UP_POLL_SECONDS)
    self.say(f"all {total} records re-applied; each worker now asks the trainer for a full fit")


@command(argument("folder", type=click.Path(file_okay=False)))
async def dump(self: ProductCommand, folder: str) -> None:
    """Write the published model, the catalogue, every user's state and the popularity to
    FOLDER (new or empty) with a manifest, for ``restore`` into a fresh deployment."""
    try:
        manifest = await backup.dump(self.product.settings, self.product.stores, Path(folder))
    except (backup.BackupError, RedisError, KafkaError, OSError) as error:
        raise SystemExit(f"dump failed: {error}") from None
    self.say(
        f"dumped model {manifest['model_version']}, {manifest['users']} users and "
        f"{manifest['items']} items to {folder}"
    )


@command(argument("folder", type=click.Path(exists=True, file_okay=False)))
async def restore(self: ProductCommand, folder: str) -> None:
    """Bring a fresh deployment (no model, no events yet) to a dump's state: users through
    restore messages in user-actions, the catalogue through items, model and popularity into
    Redis. Start the workers afterwards (or leave them running: they apply it as it comes)."""
    await self.app.producer.maybe_start()
    topics = self.product.topics
    for topic in topics.all:
        await topic.maybe_declare()

    async def send_user(key: bytes, value: bytes) -> None:
        await topics.user_actions.send(key=key, value=value, headers=[(RESTORE_HEADER, b"1")])

    async def send_item(key: str, value: bytes) -> None:
        await topics.items.send(key=key.encode(), value=value)

    try:
        manifest = await backup.restore(
            self.product.settings, self.product.stores, Path(folder), send_user, send_item
        )
        await self.app.producer.flush()
    except (backup.BackupError, RedisError, KafkaError, OSError) as error:
        raise SystemExit(f"restore failed: {error}") from None
    finally:
        await self.app.producer.stop()
    self.say(
        f"restored {manifest['users']} users, {manifest['items']} items and model "
        f"{manifest['model_version']} (served as {manifest['restored_as']}) from {folder}"
    )
