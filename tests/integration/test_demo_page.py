"""The demo page in a real browser (headless Chromium) and the metrics it makes move."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness.data import seed_history
from harness.http import eventually, get_json, get_metric, post_json

USER = "seed-a1"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's chromium through its chromium-driver (`make test` installs both)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("chromium and chromedriver are needed: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        try:
            yield session
        finally:
            session.quit()


@pytest.fixture(scope="module")
async def personal_user(worker, http) -> str:
    """A user of the seed history with a personal list, every event of it applied."""
    status, state = await get_json(http, f"{worker.url}/users/{USER}")
    applied = state["event_count"] if status == 200 else 0
    events = seed_history()
    status, _ = await post_json(http, f"{worker.url}/events", {"events": events})
    assert status == 202
    applied += sum(event["user_id"] == USER for event in events)

    # Another module may have given this user a personal list already: wait for its events too.
    async def personal():
        status, state = await get_json(http, f"{worker.url}/users/{USER}")
        if status != 200 or state["event_count"] < applied:
            return None
        _, body = await get_json(http, f"{worker.url}/recommend/{USER}")
        return body if body["source"] == "personal" else None

    await eventually(personal, within=30, interval=0.2)
    return USER


def shown_items(browser: webdriver.Chrome) -> list[str]:
    """The item ids listed, read in one script: the page may replace the rows meanwhile."""
    return browser.execute_script(
        "return [...document.querySelectorAll('#recs li')].map((row) => row.dataset.item)"
    )


async def test_clicking_an_item_on_the_page_changes_the_list_without_a_reload(
    worker, http, personal_user, browser
):
    wait = WebDriverWait(browser, 10)

    async def page_shows_the_current_list():
        """The page shows the list the worker serves, from the model it serves. Otherwise (the
        trainer published while the page loaded, or the user's events were still being
        applied) a rewrite of the list is pending; the page, which takes the first rewritten
        list after a click, would show that one, which may still hold the clicked item."""
        await asyncio.to_thread(browser.get, f"{worker.url}/?user={personal_user}")
        await asyncio.to_thread(wait.until, lambda b: len(shown_items(b)) == 10)
        _, served = await get_json(http, f"{worker.url}/recommend/{personal_user}")
        serving = (await get_json(http, f"{worker.url}/health"))[1]["model_version"]
        shown_at = float(browser.find_element(By.ID, "updated").get_attribute("data-at"))
        current = served["model_version"] == serving and shown_at == served["updated_at"]
        return served if current else None

    served = await eventually(page_shows_the_current_list, within=20, interval=0.2)
    assert browser.find_element(By.ID, "source").text == "personal"
    assert browser.find_element(By.ID, "model").text == served["model_version"]
    assert browser.find_elements(By.CSS_SELECTOR, "#popular li"), "trending items are shown"
    before = shown_items(browser)
    browser.execute_script("window.notReloaded = true")

    started = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, "#recs li:first-child .act-click").click()
    await asyncio.to_thread(
        WebDriverWait(browser, 2, poll_frequency=0.05).until,
        lambda b: before[0] not in shown_items(b),
    )
    elapsed = time.monotonic() - started
    assert elapsed < 2
    assert browser.execute_script("return window.notReloaded") is True
    assert len(shown_items(browser)) == 10
    assert browser.find_element(By.ID, "similar-to").text == before[0]
    assert "list updated" in browser.find_element(By.ID, "status").text


async def test_metrics_count_freshness_and_live_hits_as_events_arrive(worker, http, personal_user):
    freshness = "recsys_freshness_seconds_count"
    trials_before = await get_metric(http, worker.url, "recsys_live_trials_total")
    fresh_before = await get_metric(http, worker.url, freshness)
    accepted_before = await get_metric(
        http, worker.url, "recsys_events_accepted_total", action="purchase"
    )
    _, listed = await get_json(http, f"{worker.url}/recommend/{personal_user}")
    bought = listed["items"][0]["item_id"]
    event = {"user_id": personal_user, "item_id": bought, "action": "purchase"}
    assert (await post_json(http, f"{worker.url}/events", event))[0] == 202

    async def counted():
        trials = await get_metric(http, worker.url, "recsys_live_trials_total")
        fresh = await get_metric(http, worker.url, freshness)
        return (trials, fresh) if trials > trials_before and fresh > fresh_before else None

    await eventually(counted, within=5, interval=0.1)
    assert (
        await get_metric(http, worker.url, "recsys_events_accepted_total", action="purchase")
        == accepted_before + 1
    )
    assert await get_metric(http, worker.url, "recsys_live_hits_total") >= 1
    assert 0 < await get_metric(http, worker.url, "recsys_live_hit_at_10_ratio") <= 1
    assert await get_metric(http, worker.url, "recsys_fold_in_seconds_count") > 0
    assert await get_metric(http, worker.url, "recsys_cache_requests_total", result="hit") > 0
    assert await get_metric(http, worker.url, "recsys_model_info") == 1
