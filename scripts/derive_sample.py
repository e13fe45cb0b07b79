"""Derive data/sample-events.csv, the demo sample, from the UCI Online Retail dataset.

Usage: python scripts/derive_sample.py ../shared/datasets/online-retail/online_retail.csv.gz

Keeps the purchases of 200 customers (fixed seed) from the dataset's last six weeks, one
event per customer, item and invoice: a small, real history for ``make run`` to feed.
"""

import csv
import gzip
import random
import sys

CUSTOMERS = 200
SINCE = 1320105600  # 2011-11-01


def main(source: str, target: str = "data/sample-events.csv") -> None:
    rows: dict[str, dict[tuple[str, str], int]] = {}
    with gzip.open(source, "rt", newline="", encoding="utf-8") as handle:
        for line in csv.DictReader(handle):
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


if __name__ == "__main__":
    main(*sys.argv[1:])
