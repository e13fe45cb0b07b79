"""The demo page in a real browser (headless Chromium), on a worker set up as ``make run`` sets
one up: the bundled catalogue and sample loaded, with an API key, so the page must ask for it."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from app.datasets import iter_events
from harness import ROOT
from harness.browser import headless_chromium
from harness.commands import run_app
from harness.http import eventually, get_json, get_metric, post_json
from harness.worker import WorkerProcess, running_worker, worker_env

KEY = secrets.token_urlsafe(24)
USER = "c15311"  # the customer `make run` opens the page on
SAMPLE_EVENTS = ROOT / "data" / "sample-events.csv"
SAMPLE_ITEMS = ROOT / "data" / "sample-items.csv"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Iterator[WorkerProcess]:
    """A worker with a key, the bundled catalogue and every sample event posted to it."""
    folder = tmp_path_factory.mktemp("shop")
    env = worker_env(folder, RECSYS_API_KEY=KEY)
    with running_worker(env, folder / "worker.log") as process:
        for command in (["load-items", str(SAMPLE_ITEMS)], ["feed", str(SAMPLE_EVENTS)]):
            done = run_app([*command, "--url", process.url], env, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        yield process


@pytest_asyncio.fixture(scope="module")
async def keyed(shop) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-API-Key": KEY}) as session:
        yield session


@pytest_asyncio.fixture(scope="module")
async def personal(shop, keyed) -> dict:
    """The customer's personal list, once all their sample events are applied."""
    fed = sum(event.user_id == USER for event in iter_events(SAMPLE_EVENTS))

    async def listed():
        status, state = await get_json(keyed, f"{shop.url}/users/{USER}")
        if status != 200 or state["event_count"] < fed:
            return None
        _, body = await get_json(keyed, f"{shop.url}/recommend/{USER}")
        return body if body["source"] == "personal" else None

    return await eventually(listed, within=90, interval=0.5)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium() as session:
        yield session


def titles() -> dict[str, str]:
    with SAMPLE_ITEMS.open(newline="", encoding="utf-8") as file:
        return {row["item_id"]: row["title"] for row in csv.DictReader(file)}


def rows(browser: webdriver.Chrome, list_id: str) -> list[dict]:
    """A list's rows as the page shows them, read in one script: the page may replace them."""
    return browser.execute_script(
        f"""return [...document.querySelectorAll('#{list_id} li')].map((row) => ({{
            item: row.dataset.item,
            name: row.querySelector('.item').textContent,
            marker: row.querySelector('.marker')?.textContent ?? null,
        }}))"""
    )


def expected_markers(before: list[str], after: list[str]) -> list[str | None]:
    """What the page marks on each item of ``after``: new, or how far it moved."""
    marks: list[str | None] = []
    for position, item in enumerate(after):
        if item not in before:
            marks.append("new")
        elif before.index(item) > position:
            marks.append(f"▲{before.index(item) - position}")
        elif before.index(item) < position:
            marks.append(f"▼{position - before.index(item)}")
        else:
            marks.append(None)
    return marks


def counter(browser: webdriver.Chrome, output_id: str) -> float | None:
    """A counter's latest value as the page shows it; None while it shows none ("-")."""
    text = browser.find_element(By.ID, output_id).text.split("/")[0].strip()
    return None if text == "-" else float(text)


async def open_page(browser: webdriver.Chrome, url: str, key: str | None = KEY) -> None:
    """The page on the customer, with the API key already given (as the page keeps it for the
    tab's session) or, with ``key=None``, not."""
    await asyncio.to_thread(browser.get, f"{url}/livez")
    browser.execute_script(
        "sessionStorage.clear()"
        if key is None
        else f"sessionStorage.setItem('recsys-api-key', {json.dumps(key)})"
    )
    await asyncio.to_thread(browser.get, f"{url}/?user={USER}")
    await asyncio.to_thread(WebDriverWait(browser, 20).until, lambda b: len(rows(b, "recs")) == 10)


async def test_without_the_key_the_page_shows_the_key_field_and_names_the_refusal(
    shop, personal, browser
):
    await open_page(browser, shop.url, key=None)
    wait = WebDriverWait(browser, 10)

    await asyncio.to_thread(wait.until, lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "GET /metrics: 401" in browser.find_element(By.ID, "error-text").text
    assert browser.find_element(By.ID, "key-field").is_displayed()

    browser.find_element(By.ID, "api-key").send_keys(KEY + "\n")
    await asyncio.to_thread(wait.until, lambda b: not b.find_element(By.ID, "error").is_displayed())
    await asyncio.to_thread(wait.until, lambda b: counter(b, "hr-now") is not None)


async def test_lists_history_and_similar_items_show_catalogue_titles(shop, personal, browser):
    await open_page(browser, shop.url)
    catalogue = titles()

    def titled(b) -> bool:
        shown = [row for name in ("recs", "popular", "history", "similar") for row in rows(b, name)]
        return bool(shown) and all(row["name"] == catalogue[row["item"]] for row in shown)

    await asyncio.to_thread(WebDriverWait(browser, 10).until, titled)
    first = rows(browser, "recs")[0]
    assert browser.find_element(By.ID, "similar-to").text == first["name"]  # shown at once
    assert rows(browser, "similar")


async def test_trending_on_the_replayed_sample_is_read_at_its_newest_event(shop, keyed, personal):
    newest = max(event.timestamp for event in iter_events(SAMPLE_EVENTS))

    status, body = await get_json(keyed, f"{shop.url}/popular?n=10")

    assert status == 200
    assert body["as_of"] == newest  # December 2011, not today
    assert body["items"][0]["score"] > 1  # not 1e-235


async def test_clicking_an_item_changes_the_list_with_markers_without_a_reload(
    shop, keyed, personal, browser
):
    wait = WebDriverWait(browser, 10)

    async def page_shows_the_current_list():
        """The page shows the list the worker serves, from the model it serves. Otherwise (the
        trainer published while the page loaded) a rewrite of the list is pending; the page,
        which takes the first rewritten list after a click, would show that one, which may
        still hold the clicked item."""
        await open_page(browser, shop.url)
        _, served = await get_json(keyed, f"{shop.url}/recommend/{USER}")
        serving = (await get_json(keyed, f"{shop.url}/health"))[1]["model_version"]
        shown_at = float(browser.find_element(By.ID, "updated").get_attribute("data-at"))
        current = served["model_version"] == serving and shown_at == served["updated_at"]
        return served if current else None

    served = await eventually(page_shows_the_current_list, within=30, interval=0.2)
    assert browser.find_element(By.ID, "source").text == "personal"
    assert browser.find_element(By.ID, "model").text == served["model_version"]
    before = [row["item"] for row in rows(browser, "recs")]
    assert [row["marker"] for row in rows(browser, "recs")] == [None] * 10  # a first load
    browser.execute_script("window.notReloaded = true")

    browser.find_element(By.CSS_SELECTOR, "#recs li:first-child .act-click").click()
    await asyncio.to_thread(
        WebDriverWait(browser, 3, poll_frequency=0.05).until,
        lambda b: before[0] not in [row["item"] for row in rows(b, "recs")],
    )
    await asyncio.to_thread(
        wait.until, lambda b: "list updated" in b.find_element(By.ID, "status").text
    )

    after = rows(browser, "recs")
    assert browser.execute_script("return window.notReloaded") is True
    assert len(after) == 10
    assert [row["marker"] for row in after] == expected_markers(before, [r["item"] for r in after])
    assert "new" in [row["marker"] for row in after]
    assert browser.find_element(By.ID, "similar-to").get_attribute("data-item") == before[0]


async def test_purchases_count_freshness_and_live_hits_in_the_metrics(shop, keyed, personal):
    freshness = "recsys_freshness_seconds_count"
    trials_before = await get_metric(keyed, shop.url, "recsys_live_trials_total")
    fresh_before = await get_metric(keyed, shop.url, freshness)
    accepted_before = await get_metric(
        keyed, shop.url, "recsys_events_accepted_total", action="purchase"
    )
    _, listed = await get_json(keyed, f"{shop.url}/recommend/{USER}")
    bought = listed["items"][0]["item_id"]
    event = {"user_id": USER, "item_id": bought, "action": "purchase"}
    assert (await post_json(keyed, f"{shop.url}/events", event))[0] == 202

    async def counted():
        trials = await get_metric(keyed, shop.url, "recsys_live_trials_total")
        fresh = await get_metric(keyed, shop.url, freshness)
        return (trials, fresh) if trials > trials_before and fresh > fresh_before else None

    await eventually(counted, within=5, interval=0.1)
    assert (
        await get_metric(keyed, shop.url, "recsys_events_accepted_total", action="purchase")
        == accepted_before + 1
    )
    assert await get_metric(keyed, shop.url, "recsys_live_hits_total") >= 1
    assert 0 < await get_metric(keyed, shop.url, "recsys_live_hit_at_10_ratio") <= 1
    assert await get_metric(keyed, shop.url, "recsys_fold_in_seconds_count") > 0
    assert await get_metric(keyed, shop.url, "recsys_cache_requests_total", result="hit") > 0
    assert await get_metric(keyed, shop.url, "recsys_model_info") == 1


async def test_playing_the_shop_moves_the_counters_until_it_is_stopped(
    shop, keyed, personal, browser
):
    await open_page(browser, shop.url)
    wait = WebDriverWait(browser, 30)
    play = browser.find_element(By.ID, "play")
    await asyncio.to_thread(wait.until, lambda _: play.get_attribute("data-playing") == "false")
    processed_before = await get_metric(keyed, shop.url, "recsys_events_processed_total")

    play.click()

    await asyncio.to_thread(wait.until, lambda _: play.get_attribute("data-playing") == "true")
    await asyncio.to_thread(wait.until, lambda b: (counter(b, "rate-now") or 0) > 0)
    await asyncio.to_thread(wait.until, lambda b: "/" in b.find_element(By.ID, "fresh-now").text)
    chart = browser.find_element(By.CSS_SELECTOR, "#rate-chart polyline")
    await asyncio.to_thread(wait.until, lambda _: len(chart.get_attribute("points").split()) >= 2)
    assert "playing" in browser.find_element(By.ID, "play-status").text
    assert await get_metric(keyed, shop.url, "recsys_events_processed_total") > processed_before

    play.click()
    await asyncio.to_thread(wait.until, lambda _: play.get_attribute("data-playing") == "false")
    _, status = await get_json(keyed, f"{shop.url}/demo/play")
    assert status["playing"] is False and 0 < status["sent"] < status["total"]


async def test_the_play_command_posts_a_history_continuing_from_the_shops_clock(
    shop, keyed, personal, tmp_path
):
    history = tmp_path / "history.csv"
    history.write_text(
        "user_id,item_id,action,timestamp\n"
        "play-u1,85123A,view,1300000000\n"
        "play-u2,22423,click,1300000060\n"
        "play-u1,47566,purchase,1300003600\n"
    )

    started = time.time()
    done = await asyncio.to_thread(
        run_app,
        ["play", "--rate", "100", "--url", shop.url, "--path", str(history)],
        shop.env,
        60,
    )
    finished = time.time()

    assert done.returncode == 0, done.stdout + done.stderr
    said = re.search(r"played 3 events to \S+ at 100/s, .* shop's clock ([0-9.]+) ", done.stdout)
    assert said, done.stdout
    clock = float(said[1])

    async def last_event(user_id: str, count: int) -> float | None:
        status, state = await get_json(keyed, f"{shop.url}/users/{user_id}")
        return state["last_event_at"] if status == 200 and state["event_count"] == count else None

    last = await eventually(lambda: last_event("play-u1", 2), within=30)
    assert last - await eventually(lambda: last_event("play-u2", 1), within=30) == pytest.approx(
        3600 - 60, abs=0.01
    )
    # The history's first event lands a second after the clock, unless that would put its last
    # one after the command's now (the page's play test moves the clock up to now).
    assert min(clock + 1 + 3600, started) - 0.01 <= last <= min(clock + 1 + 3600, finished) + 0.01
