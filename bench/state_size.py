"""Changelog bytes of the ``user-state`` table: the JSON records written before format 1 against
format 1 with the per-user item cap, on Online Retail users.

Every event is folded with ``UserState.with_action`` (the product's weights) in file order.
Printed per encoding: the size of each user's final record (median, p90, max), and the
changelog bytes per event when the table writes each touched user once per batch of
``--batch`` consecutive events (1: a record per event; the product's default 1,000: one per
user per batch), against the raw event's key + JSON value. Two cases: the data set as it is
(no client event ids) and every event carrying a 36-character ``event_id``.

The "before" record is what the JSON ``UserState`` wrote: every item (no cap), times as
floats, event ids as strings. It is computed, not measured in Kafka; the pipeline's own figure
comes from ``bench/ingest.py``.

    .venv/bin/python bench/state_size.py [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

sys.path.append(str(Path(__file__).resolve().parent.parent))  # harness/, run as bench/x.py

from app.datasets import Event, event_json, read_events
from app.models import RECENT_EVENT_IDS, UserAction, UserState, empty_state
from app.settings import Settings

DATASET = "/work/shared/datasets/online-retail/online_retail.csv.gz"


class Fold:
    """Each user's state under one cap, plus the string event ids the JSON records kept."""

    def __init__(self, settings: Settings, max_items: int | None) -> None:
        self.settings = settings
        self.max_items = max_items
        self.states: dict[str, UserState] = {}
        self.event_ids: dict[str, list[str]] = {}

    def apply(self, offset: int, event: Event, event_id: str | None) -> None:
        action = UserAction(event.user_id, event.item_id, event.action, event.timestamp, event_id)
        state = self.states.get(event.user_id, empty_state())
        weight = self.settings.weight(event.action)
        self.states[event.user_id] = state.with_action(action, weight, offset, None, self.max_items)
        if event_id is not None:
            ids = self.event_ids.setdefault(event.user_id, [])
            self.event_ids[event.user_id] = [*ids[-(RECENT_EVENT_IDS - 1) :], event_id]


def json_record(fold: Fold, user_id: str) -> int:
    """Bytes of the record the JSON ``UserState`` wrote for this state."""
    state = fold.states[user_id].to_representation()
    state["items"] = {item: [w, c, float(t)] for item, (w, c, t) in state["items"].items()}
    state["recent_event_ids"] = fold.event_ids.get(user_id, [])
    return len(orjson.dumps(state))


def binary_record(fold: Fold, user_id: str) -> int:
    return len(fold.states[user_id].dumps())


def changelog_bytes(
    events: Sequence[Event],
    fold: Fold,
    size: Callable[[Fold, str], int],
    batch: int,
    with_ids: bool,
) -> tuple[float, float]:
    """(changelog bytes per event, records per event) writing each touched user once a batch."""
    total = records = 0
    for start in range(0, len(events), batch):
        touched = dict.fromkeys(event.user_id for event in events[start : start + batch])
        for offset in range(start, min(start + batch, len(events))):
            event_id = str(uuid.UUID(int=offset)) if with_ids else None
            fold.apply(offset, events[offset], event_id)
        for user_id in touched:
            total += len(user_id.encode()) + size(fold, user_id)
        records += len(touched)
    return total / len(events), records / len(events)


def summary(sizes: list[int]) -> str:
    sizes = sorted(sizes)
    p90 = sizes[int(0.9 * (len(sizes) - 1))]
    return f"median {statistics.median(sizes):,.0f}  p90 {p90:,}  max {sizes[-1]:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N events only")
    parser.add_argument("--batches", default="1,1000", help="events per batch, comma-separated")
    args = parser.parse_args()
    settings = Settings()
    events = read_events(DATASET)[: args.limit]
    raw = [len(e.user_id.encode()) + len(orjson.dumps(event_json(e))) for e in events]
    print(f"{len(events):,} events, {len({e.user_id for e in events}):,} users")
    print(f"raw event key + JSON value: median {statistics.median(raw):.0f} bytes")
    encodings = {
        "before: JSON, no cap": (None, json_record),
        f"after: format 1, cap {settings.max_items_per_user}": (
            settings.max_items_per_user,
            binary_record,
        ),
    }
    for with_ids in (False, True):
        print(f"\nevent ids: {'36 characters on every event' if with_ids else 'none'}")
        for name, (cap, size) in encodings.items():
            for batch in map(int, args.batches.split(",")):
                fold = Fold(settings, cap)
                per_event, records = changelog_bytes(events, fold, size, batch, with_ids)
                if batch == 1:
                    finals = [size(fold, user_id) for user_id in fold.states]
                    print(f"  {name}: final record per user {summary(finals)} bytes")
                print(
                    f"    batch {batch:>5}: {records:.3f} records/event, "
                    f"{per_event:,.0f} changelog bytes/event "
                    f"({per_event / statistics.median(raw):.1f}x the raw event)"
                )


if __name__ == "__main__":
    main()
