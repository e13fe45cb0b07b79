"""Worker logs, one line per record naming the worker, so a log shipper or ``grep`` can split
them by field and tell the workers of one deployment apart: ``key=value`` pairs, or a JSON
object (``RECSYS_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class LineFormatter(logging.Formatter):
    """``ts=... level=... worker=... pid=... logger=... msg="..."`` (the message and any
    traceback JSON-quoted, so a multi-line one stays on its line), or the same fields as one
    JSON object when ``json_lines``."""

    converter = time.gmtime

    def __init__(self, worker: str, json_lines: bool = False) -> None:
        super().__init__()
        self.worker = worker
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "worker": self.worker,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.json_lines:
            return json.dumps(fields, ensure_ascii=False)
        quoted = {"msg", "exc"}
        return " ".join(
            f"{name}={json.dumps(value, ensure_ascii=False) if name in quoted else value}"
            for name, value in fields.items()
        )


def logging_config(worker: str, json_lines: bool = False) -> dict[str, Any]:
    """Faust's ``logging_config``: merged into its own, replacing the formatters of both its
    file and its console handler."""
    formatter = {"()": LineFormatter, "worker": worker, "json_lines": json_lines}
    return {"merge": True, "formatters": {"default": formatter, "colored": formatter}}
