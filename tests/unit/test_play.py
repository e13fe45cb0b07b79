"""Playing the shop: the history moved onto the shop's clock, posted in paced batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.datasets import Event
from app.play import NothingToPlay, Player, PlayRefused, post_at_rate, retimed

DAY = 86_400.0
HISTORY = [
    Event("u1", "a", "view", 1_000 * DAY),
    Event("u2", "b", "click", 1_000 * DAY + 60),
    Event("u1", "c", "purchase", 1_010 * DAY),
]


def test_a_play_starts_a_second_after_the_shop_clock_with_its_gaps_kept():
    played = retimed(HISTORY, shop_clock=2_000 * DAY, now=3_000 * DAY)

    assert [event["timestamp"] for event in played] == [
        2_000 * DAY + 1,
        2_000 * DAY + 61,
        2_010 * DAY + 1,
    ]
    assert [(e["user_id"], e["item_id"], e["action"]) for e in played] == [
        ("u1", "a", "view"),
        ("u2", "b", "click"),
        ("u1", "c", "purchase"),
    ]


def test_a_play_from_a_clock_near_now_ends_at_now_rather_than_in_the_future():
    played = retimed(HISTORY, shop_clock=3_000 * DAY, now=3_000 * DAY)

    assert played[-1]["timestamp"] == 3_000 * DAY
    assert played[0]["timestamp"] == 2_990 * DAY


class Shop:
    """An HTTP server standing in for a worker's POST /events: records each batch, and answers
    ``refuse_after`` batches with 202, then 503."""

    def __init__(self, refuse_after: int = 1_000) -> None:
        self.batches: list[list[dict]] = []
        self.refuse_after = refuse_after
        self.received = asyncio.Event()

    async def events(self, request: web.Request) -> web.Response:
        if len(self.batches) >= self.refuse_after:
            return web.json_response({"error": "Kafka did not acknowledge"}, status=503)
        self.batches.append((await request.json())["events"])
        self.received.set()
        return web.json_response({"accepted": len(self.batches[-1])}, status=202)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Shop, str]]:
    shop = Shop()
    app = web.Application()
    app.router.add_post("/events", shop.events)
    async with TestServer(app) as server:
        yield shop, str(server.make_url("")).rstrip("/")


def events(count: int) -> list[dict]:
    return [{"user_id": f"u{n}", "item_id": "i", "action": "view"} for n in range(count)]


async def test_a_play_posts_every_event_in_batches_of_a_tenth_of_its_rate(served):
    shop, url = served
    async with aiohttp.ClientSession() as session:
        sent = [count async for count in post_at_rate(session, url, events(45), rate=100)]

    assert [len(batch) for batch in shop.batches] == [10, 10, 10, 10, 5]
    assert sent == [10, 20, 30, 40, 45]
    assert [event["user_id"] for batch in shop.batches for event in batch] == [
        f"u{n}" for n in range(45)
    ]


async def test_a_refused_batch_stops_the_play_naming_the_answer(served):
    shop, url = served
    shop.refuse_after = 2
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PlayRefused, match="answered 503 after 20 events"):
            async for _ in post_at_rate(session, url, events(50), rate=100):
                pass
    assert len(shop.batches) == 2


async def test_a_second_play_is_refused_while_one_runs(served, tmp_path):
    shop, url = served
    history = tmp_path / "history.csv"
    history.write_text("user_id,item_id,action,timestamp\n" + "u,i,view,1300000000\n" * 50)
    player = Player(str(history), url, headers={})

    first = await player.start(events_per_second=10, shop_clock=1_400_000_000.0)
    with pytest.raises(PlayRefused, match="a play is running"):
        await player.start(events_per_second=10, shop_clock=1_400_000_000.0)
    await asyncio.wait_for(shop.received.wait(), timeout=5)
    await player.stop()

    assert first.total == 50 and first.sent < 50
    assert sum(len(batch) for batch in shop.batches) < 50
    assert player.status()["playing"] is False


async def test_a_history_that_cannot_be_read_is_nothing_to_play(tmp_path):
    player = Player(str(tmp_path / "missing.csv"), "http://127.0.0.1:1", headers={})

    with pytest.raises(NothingToPlay, match=r"missing\.csv"):
        await player.start(events_per_second=10, shop_clock=0.0)
