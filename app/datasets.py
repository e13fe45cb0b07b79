"""Interaction data sets read from files: no Faust, no Kafka, no Redis.

The one reader of events files: ``python -m app feed``, the evaluations and the benchmarks all
read through :func:`iter_events` (catalogue files, for ``load-items``, through
:func:`iter_items`). Two events formats, told apart by their header row, plain or
gzip-compressed (detected from the file's first bytes, whatever its name):

* an **events CSV**: ``user_id,item_id,action,timestamp`` (timestamp in unix seconds or
  ISO-8601, UTC when no offset is given; other columns are ignored);
* the **UCI Online Retail** file (``InvoiceNo,StockCode,...,CustomerID,...,InvoiceTimestamp``):
  every invoice line with a customer id is a ``purchase`` of ``StockCode`` by ``"c" +
  CustomerID`` at ``InvoiceTimestamp``; a line of a cancellation invoice (``InvoiceNo`` starting
  with ``C``) is a ``return``. Lines without a customer id (``NA`` or empty) are skipped.
  Quantities and prices are not used: one line, one event.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from app.validation import InvalidEvent, parse_timestamp

EVENT_COLUMNS = ("user_id", "item_id", "action", "timestamp")
RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "CustomerID", "InvoiceTimestamp")
MISSING_CUSTOMER = frozenset({"", "NA"})
_GZIP_MAGIC = b"\x1f\x8b"


class Event(NamedTuple):
    """One user action; ``timestamp`` in unix seconds."""

    user_id: str
    item_id: str
    action: str
    timestamp: float


class DatasetError(ValueError):
    """A file that cannot be read as events; the message names the file, line and problem."""


def retail_events(rows: Iterable[Mapping[str, str]], first_line: int = 2) -> Iterator[Event]:
    """Events of Online Retail rows (dicts keyed by the file's header); see the module docs."""
    for line, row in enumerate(rows, start=first_line):
        customer = (row["CustomerID"] or "").strip()
        if customer in MISSING_CUSTOMER:
            continue
        item = (row["StockCode"] or "").strip()
        if not item:
            raise DatasetError(f"line {line}: StockCode is empty")
        action = (
            "return" if (row["InvoiceNo"] or "").strip().upper().startswith("C") else "purchase"
        )
        yield Event("c" + customer, item, action, _seconds(row["InvoiceTimestamp"], line))


def generic_events(rows: Iterable[Mapping[str, str]], first_line: int = 2) -> Iterator[Event]:
    """Events of events-CSV rows (dicts with at least ``user_id,item_id,action,timestamp``)."""
    for line, row in enumerate(rows, start=first_line):
        values = []
        for column in ("user_id", "item_id", "action"):
            value = (row[column] or "").strip()
            if not value:
                raise DatasetError(f"line {line}: {column} is empty")
            values.append(value)
        yield Event(*values, _seconds(row["timestamp"], line))


def detect_format(header: Iterable[str]) -> str:
    """``"events"`` or ``"online-retail"`` from a CSV header; :class:`DatasetError` otherwise."""
    columns = {column.strip() for column in header}
    if columns.issuperset(EVENT_COLUMNS):
        return "events"
    if columns.issuperset(RETAIL_COLUMNS):
        return "online-retail"
    raise DatasetError(
        f"unknown CSV format: expected the columns {','.join(EVENT_COLUMNS)} (events) or "
        f"{','.join(RETAIL_COLUMNS)} (Online Retail), got {','.join(sorted(columns))}"
    )


@contextmanager
def csv_rows(path: str | Path) -> Iterator[csv.DictReader]:
    """A CSV file's rows by its header, plain or gzip; errors inside name the file."""
    path = Path(path)
    with path.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", newline="") as text:
        reader = csv.DictReader(text)
        if reader.fieldnames is None:
            raise DatasetError(f"{path}: the file is empty")
        try:
            yield reader
        except DatasetError as error:
            raise DatasetError(f"{path}: {error}") from None


def iter_events(path: str | Path) -> Iterator[Event]:
    """The events of a CSV file (either format, plain or gzip), in file order, as read."""
    with csv_rows(path) as reader:
        kind = detect_format(reader.fieldnames or ())
        yield from (generic_events if kind == "events" else retail_events)(reader)


def iter_items(path: str | Path) -> Iterator[dict[str, object]]:
    """The ``POST /items`` form of a catalogue CSV's rows: ``item_id``, then any of ``title``,
    ``description``, ``categories`` and ``tags`` (the last two ``|``-separated)."""
    with csv_rows(path) as reader:
        if "item_id" not in (reader.fieldnames or ()):
            raise DatasetError("a catalogue CSV needs an item_id column")
        for row in reader:
            item: dict[str, object] = {"item_id": row["item_id"].strip()}
            for text in ("title", "description"):
                if row.get(text):
                    item[text] = row[text]
            for labels in ("categories", "tags"):
                if row.get(labels):
                    item[labels] = [label.strip() for label in row[labels].split("|")]
            yield item


def read_events(path: str | Path) -> list[Event]:
    """All events of a CSV file (either format, plain or gzip), in file order."""
    return list(iter_events(path))


def event_json(event: Event) -> dict[str, object]:
    """The ``POST /events`` form of an event, with its original timestamp."""
    return event._asdict()


def _seconds(value: str | None, line: int) -> float:
    try:
        seconds = parse_timestamp((value or "").strip())
    except InvalidEvent as error:
        raise DatasetError(f"line {line}: timestamp {error.problem}") from None
    if not math.isfinite(seconds):
        raise DatasetError(f"line {line}: timestamp is not finite: {value!r}")
    return seconds
