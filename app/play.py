"""Play the shop: a recorded history posted through ``POST /events`` at a chosen rate, as if the
shop went on trading, so the demo page's list, trending and counters move by themselves.

The page's Play button runs it inside the worker (``/demo/play``, one :class:`Player` a worker);
``python -m app play`` runs it from a terminal. Either way every event goes through the API's
validation and Kafka like any client's. A play moves the history in time so that its first
event lands just after the shop's clock (the newest event time seen, ``GET /popular``'s
``as_of``), its gaps kept: a year-long sample played twice reads as two years of the shop, and
trending follows what happened when. It never lands later than the sample's span before now,
so a deployment whose clock is today is not refused events from the future.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from app.datasets import DatasetError, Event, event_json, iter_events

BATCHES_PER_SECOND = 10
"""Requests a second of a play: its rate is reached in this many batches."""


class PlayRefused(Exception):
    """A play cannot start or go on; the message says why."""


class NothingToPlay(PlayRefused):
    """The history to play cannot be read."""


def retimed(events: Sequence[Event], shop_clock: float, now: float) -> list[dict[str, Any]]:
    """``events`` as ``POST /events`` bodies, moved so the first lands one second after
    ``shop_clock`` (or earlier, so that none is later than ``now``), their gaps kept."""
    if not events:
        return []
    first = min(event.timestamp for event in events)
    span = max(event.timestamp for event in events) - first
    shift = min(shop_clock + 1.0, now - span) - first
    return [{**event_json(event), "timestamp": event.timestamp + shift} for event in events]


@dataclass
class PlayProgress:
    """How far one play has come (``GET /demo/play``)."""

    total: int
    events_per_second: float
    sent: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None

    def as_dict(self, playing: bool) -> dict[str, Any]:
        return {"playing": playing, **self.__dict__}


async def post_at_rate(
    session: aiohttp.ClientSession, url: str, events: Sequence[dict[str, Any]], rate: float
) -> AsyncIterator[int]:
    """POST ``events`` to ``url``'s ``/events`` at ``rate`` a second, in
    :data:`BATCHES_PER_SECOND` batches a second paced against the clock (a slow answer is
    caught up on, not added to the schedule), yielding how many were accepted after each batch.
    Raises :class:`PlayRefused` on any answer but 202."""
    per_batch = max(1, round(rate / BATCHES_PER_SECOND))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for number, start in enumerate(range(0, len(events), per_batch)):
        await asyncio.sleep(max(0.0, started + number * per_batch / rate - loop.time()))
        batch = events[start : start + per_batch]
        async with session.post(f"{url}/events", json={"events": batch}) as response:
            if response.status != 202:
                raise PlayRefused(
                    f"POST /events answered {response.status} after {start} events: "
                    f"{(await response.text())[:200]}"
                )
        yield start + len(batch)


def load_history(path: str | Path) -> list[Event]:
    """The history to play, in time order; NothingToPlay when it cannot be read."""
    try:
        return sorted(iter_events(path), key=lambda event: event.timestamp)
    except (OSError, DatasetError) as error:
        raise NothingToPlay(f"cannot read the history to play, {path}: {error}") from None


class Player:
    """The one play a worker runs at a time, for the demo page."""

    def __init__(self, history_path: str, url: str, headers: dict[str, str]) -> None:
        self.history_path = history_path
        self.url = url
        self.headers = headers
        self.progress: PlayProgress | None = None
        self._history: list[Event] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def playing(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> dict[str, Any]:
        """The current or last play's progress; ``{"playing": false}`` before any."""
        if self.progress is None:
            return {"playing": False}
        return self.progress.as_dict(self.playing)

    async def start(self, events_per_second: float, shop_clock: float) -> PlayProgress:
        """Start playing the history from ``shop_clock``; PlayRefused while a play runs,
        NothingToPlay when the history cannot be read.

        The history is read once, off the event loop (a large file takes a while), and kept."""
        if self._history is None:
            self._history = await asyncio.to_thread(load_history, self.history_path)
        if self.playing:
            raise PlayRefused("a play is running: stop it first (DELETE /demo/play)")
        events = retimed(self._history, shop_clock, time.time())
        self.progress = progress = PlayProgress(len(events), events_per_second)
        self._task = asyncio.get_running_loop().create_task(self._run(events, progress))
        return progress

    async def stop(self) -> None:
        """Stop the running play, if any; what was sent stays sent."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, events: list[dict[str, Any]], progress: PlayProgress) -> None:
        try:
            async with aiohttp.ClientSession(headers=self.headers) as session:
                rate = progress.events_per_second
                async for sent in post_at_rate(session, self.url, events, rate):
                    progress.sent = sent
        except (PlayRefused, aiohttp.ClientError, OSError) as error:
            progress.error = str(error)
        finally:
            progress.finished_at = time.time()
