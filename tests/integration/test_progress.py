"""Progress of the long commands against the session's worker: ``retrain`` follows its fit to
the published version on a terminal, ``feed`` off a terminal counts what it posted."""

from __future__ import annotations

import asyncio

from app.stores.model import version_sequence
from harness.commands import run_app, run_in_terminal
from harness.http import eventually, get_json, post_json


async def test_retrain_follows_the_fit_it_asked_for_to_its_published_version(
    worker, http, tmp_path
):
    events = [
        {"user_id": f"progress-user-{n}", "item_id": f"progress-item-{n % 4}", "action": "click"}
        for n in range(12)
    ]
    assert (await post_json(http, f"{worker.url}/events", {"events": events}))[0] == 202

    async def applied():
        _, body = await get_json(http, f"{worker.url}/users/progress-user-11")
        return body if body.get("event_count") else None

    await eventually(applied, within=15, interval=0.2)
    code, shown = await asyncio.to_thread(
        run_in_terminal, ["retrain", "--max-wait", "120"], worker.env, tmp_path / "out.txt"
    )
    said = (tmp_path / "out.txt").read_text()
    assert code == 0, shown + said
    iterations = worker.env["RECSYS_ALS_ITERATIONS"]
    assert f"{iterations}/{iterations}" in shown
    before = said.split("(current model: ")[1].split(")")[0]
    published = said.split("\nmodel ")[1].split(" published")[0]
    assert before == "None" or version_sequence(published) > version_sequence(before)

    async def served():
        _, health = await get_json(http, f"{worker.url}/health")
        version = health["model_version"]
        return version if version_sequence(version) >= version_sequence(published) else None

    await eventually(served, within=10, interval=0.2)


async def test_feed_off_a_terminal_reports_every_event_it_posted(worker, http, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,action,timestamp\n"
        + "".join(f"feed-user-{n},feed-item,view,1700000000\n" for n in range(5))
    )
    fed = await asyncio.to_thread(
        run_app, ["feed", str(events), "--url", worker.url, "--batch", "2"], worker.env, 60
    )
    assert fed.returncode == 0, fed.stderr
    assert f"fed 5 events from {events}" in fed.stdout

    async def applied():
        _, body = await get_json(http, f"{worker.url}/users/feed-user-4")
        return body if body.get("event_count") == 1 else None

    await eventually(applied, within=15, interval=0.2)
