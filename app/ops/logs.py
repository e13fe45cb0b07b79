"""Worker logs as ``key=value`` lines, each naming the worker, so a log shipper or ``grep`` can
split them by field and tell the workers of one deployment apart."""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... worker=... logger=... msg="..."``, one line per record (the message
    and any traceback JSON-quoted, so a multi-line one stays on its line)."""

    converter = time.gmtime

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        stamp = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z"
        line = (
            f"ts={stamp} level={record.levelname.lower()} worker={self.worker} "
            f"pid={record.process} logger={record.name} "
            f"msg={json.dumps(record.getMessage(), ensure_ascii=False)}"
        )
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info))}"
        return line


def logging_config(worker: str) -> dict[str, Any]:
    """Faust's ``logging_config``: merged into its own, replacing the formatters of both its
    file and its console handler."""
    formatter = {"()": KeyValueFormatter, "worker": worker}
    return {"merge": True, "formatters": {"default": formatter, "colored": formatter}}
