"""Progress of long commands: bars on a terminal, plain messages elsewhere, stdout kept clean."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from app.model_store import version_sequence
from app.progress import Progress
from tests.conftest import ROOT, eventually, get_json, post_json

TERMINAL_COLUMNS = 120


def run_in_terminal(
    arguments: list[str], env: dict[str, str], stdout: Path, timeout: float = 180
) -> tuple[int, str]:
    """Run ``python -m app ...`` with stderr on a pseudo-terminal, as someone at a terminal sees
    it, and stdout into a file. Returns the exit code and what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, TERMINAL_COLUMNS, 0, 0))
    with open(stdout, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *arguments],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=follower,
        )
    os.close(follower)
    shown = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=timeout)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return code, shown.decode(errors="replace")


def test_a_bar_shows_its_description_and_count_when_bars_are_on():
    terminal = io.StringIO()
    with Progress(terminal, bars=True).bar("ALS fit", 3, "iteration") as bar:
        for _ in range(3):
            bar.update()
    assert "ALS fit" in terminal.getvalue()
    assert "3/3" in terminal.getvalue()


def test_off_a_terminal_only_messages_are_written():
    log = io.StringIO()
    progress = Progress(log)
    with progress.bar("ALS fit", 3) as bar:
        bar.update(3)
    progress("fitted")
    assert log.getvalue() == "fitted\n"


def test_a_silent_progress_writes_nothing(capsys):
    progress = Progress.silent()
    with progress.bar("ALS fit", 3) as bar:
        bar.update(3)
    progress("fitted")
    assert capsys.readouterr() == ("", "")


def test_a_bar_over_an_iterable_yields_every_item():
    assert list(Progress.silent().bar("replay", 3, "event", "abc")) == ["a", "b", "c"]


def test_evaluate_draws_fit_and_list_bars_on_the_terminal_and_keeps_stdout_json(tmp_path):
    env = {**os.environ, "RECSYS_ALS_ITERATIONS": "4", "RECSYS_ALS_FACTORS": "8"}
    report = tmp_path / "report.json"
    code, shown = run_in_terminal(
        ["evaluate", "--events", str(ROOT / "data" / "sample-events.csv"), "--models", "als"],
        env,
        report,
    )
    assert code == 0, shown
    assert "ALS fit" in shown and "4/4" in shown
    assert "ALS lists" in shown
    assert "als" in json.loads(report.read_text())["models"]


@pytest.mark.integration
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


@pytest.mark.integration
async def test_feed_off_a_terminal_reports_every_event_it_posted(worker, http, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,action,timestamp\n"
        + "".join(f"feed-user-{n},feed-item,view,1700000000\n" for n in range(5))
    )
    fed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "feed", str(events), "--url", worker.url, "--batch", "2"],
        cwd=ROOT,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fed.returncode == 0, fed.stderr
    assert f"fed 5 events from {events}" in fed.stdout

    async def applied():
        _, body = await get_json(http, f"{worker.url}/users/feed-user-4")
        return body if body.get("event_count") == 1 else None

    await eventually(applied, within=15, interval=0.2)
