"""What the stream did with the messages it read, counted per worker and served at ``/metrics``.

The counts start at zero when the worker starts, like any process metric; the dead-letter
topic itself keeps every refused message. A message re-delivered after a crash is counted again
when it is read again: ``duplicates_skipped`` is how many such re-deliveries changed nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from faust import web

from app.faust_app import app


@dataclass
class StreamCounters:
    applied: int = 0
    duplicates_skipped: int = 0
    rekeyed: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    """By the field at fault, as named in the ``x-recsys-error`` header."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "duplicates_skipped": self.duplicates_skipped,
            "rekeyed": self.rekeyed,
            "dead_lettered": sum(self.dead_lettered.values()),
            "dead_lettered_by_field": dict(self.dead_lettered),
        }


counters = StreamCounters()


@app.page("/metrics")
class Metrics(web.View):
    """``GET /metrics``: this worker's stream counters (an admin read when a key is set)."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json(counters.as_dict())
