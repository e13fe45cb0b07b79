"""Derive data/sample-events.csv and data/sample-items.csv, the demo sample, from the UCI
Online Retail dataset.

Usage: python scripts/derive_sample.py ../shared/datasets/online-retail/online_retail.csv.gz

Keeps the purchases of 200 customers (fixed seed) from the dataset's last six weeks, one
event per customer, item and invoice: a small, real history for ``make run`` to feed. The
items file names each of the sample's stock codes by its most frequent description in the
whole dataset, in sentence case.
"""

import csv
import gzip
import random
import sys
from collections import Counter, defaultdict

CUSTOMERS = 200
SINCE = 1320105600  # 2011-11-01


def main(
    source: str, target: str = "data/sample-events.csv", items: str = "data/sample-items.csv"
) -> None:
    rows: dict[str, dict[tuple[str, str], int]] = {}
    descriptions: dict[str, Counter[str]] = defaultdict(Counter)
    with gzip.open(source, "rt", newline="", encoding="utf-8") as handle:
        for line in csv.DictReader(handle):
            if line["Description"] not in ("", "NA"):
                descriptions[line["StockCode"]][line["Description"].strip()] += 1
            customer = line["CustomerID"]
            if customer == "NA" or line["InvoiceNo"].startswith("C"):
                continue
            timestamp = int(line["InvoiceTimestamp"])
            if timestamp >= SINCE:
                key = (line["StockCode"], line["InvoiceNo"])
                rows.setdefault(customer, {})[key] = timestamp
    chosen = random.Random(42).sample(sorted(c for c, r in rows.items() if len(r) >= 5), CUSTOMERS)
    events = sorted(
        (timestamp, f"c{customer}", item)
        for customer in chosen
        for (item, _invoice), timestamp in rows[customer].items()
    )
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "action", "timestamp"])
        for timestamp, user_id, item_id in events:
            writer.writerow([user_id, item_id, "purchase", timestamp])
    print(f"{len(events)} events of {CUSTOMERS} customers -> {target}")
    named = sorted({item for _, _, item in events} & descriptions.keys())
    with open(items, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "title"])
        for item_id in named:
            writer.writerow([item_id, descriptions[item_id].most_common(1)[0][0].capitalize()])
    print(f"{len(named)} items named -> {items}")


if __name__ == "__main__":
    main(*sys.argv[1:])
