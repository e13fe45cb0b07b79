"""The worker's log lines: key=value or JSON, one line per record, naming the worker."""

from __future__ import annotations

import json
import logging
import re
import sys

from app.ops.logs import LineFormatter


def record(message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("app.agents", logging.WARNING, __file__, 1, message, (), exc_info)


def test_a_record_is_one_key_value_line_naming_the_worker():
    line = LineFormatter("recsys:6066").format(record('dead-lettered 0:7: "x"\nsecond line'))
    assert "\n" not in line
    assert re.fullmatch(
        r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warning worker=recsys:6066 "
        r"pid=\d+ logger=app\.agents msg=(.*)",
        line,
    )
    assert json.loads(line.split(" msg=", 1)[1]) == 'dead-lettered 0:7: "x"\nsecond line'


def test_a_traceback_stays_on_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        line = LineFormatter("w").format(record("failed", sys.exc_info()))
    assert "\n" not in line
    exc = json.loads(line.split(" exc=", 1)[1])
    assert exc.startswith("Traceback") and exc.endswith("ValueError: boom")


def test_with_json_lines_a_record_is_one_json_object_with_the_same_fields():
    try:
        raise ValueError("boom")
    except ValueError:
        line = LineFormatter("recsys:6066", json_lines=True).format(
            record("failed\nsecond line", sys.exc_info())
        )

    assert "\n" not in line
    fields = json.loads(line)
    assert set(fields) == {"ts", "level", "worker", "pid", "logger", "msg", "exc"}
    assert (fields["level"], fields["worker"], fields["logger"]) == (
        "warning",
        "recsys:6066",
        "app.agents",
    )
    assert fields["msg"] == "failed\nsecond line"
    assert fields["exc"].endswith("ValueError: boom")
