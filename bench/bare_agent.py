"""A Faust agent with an empty body: the ceiling the pipeline is measured against.

Run by bench/ingest.py as ``python bench/bare_agent.py worker`` with ``BARE_APP_ID``,
``BARE_TOPIC``, ``BARE_PARTITIONS``, ``BARE_EVENTS`` (how many to wait for), ``BARE_BROKER``,
``BARE_DATA_DIR`` and ``BARE_RESULT`` (a JSON file) in the environment. It reads the same topic
the worker reads, as its own consumer group, with the worker's consumer settings left at Faust's
defaults as the worker's are, and writes the times of its first and last event to the result
file, then exits.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

ENV = os.environ
EXPECTED = int(ENV["BARE_EVENTS"])

app = faust.App(
    ENV["BARE_APP_ID"],
    broker=ENV["BARE_BROKER"],
    datadir=ENV["BARE_DATA_DIR"],
    web_enabled=False,
    topic_partitions=int(ENV["BARE_PARTITIONS"]),
)
topic = app.topic(
    ENV["BARE_TOPIC"],
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=int(ENV["BARE_PARTITIONS"]),
)
seen = {"count": 0, "first": 0.0}


def write_result(first: float, last: float) -> None:
    Path(ENV["BARE_RESULT"]).write_text(json.dumps({"first": first, "last": last}))


@app.agent(topic)
async def empty_body(stream: faust.StreamT) -> None:
    async for _ in stream:
        seen["count"] += 1
        if seen["count"] == 1:
            seen["first"] = time.time()
        if seen["count"] == EXPECTED:
            write_result(seen["first"], time.time())
            os._exit(0)  # the measurement is written; a clean shutdown would only add seconds


if __name__ == "__main__":
    app.main()
