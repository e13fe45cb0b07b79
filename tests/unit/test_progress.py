"""Progress of long commands: bars on a terminal, plain messages elsewhere, stdout kept clean."""

from __future__ import annotations

import io
import json
import os

from app.ops.progress import Progress
from harness import ROOT
from harness.commands import run_in_terminal


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
