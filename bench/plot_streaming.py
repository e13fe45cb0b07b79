"""Plot streaming HR@10 over stream time from a ``python -m app streaming-eval --out`` report.

Top: HR@10 of each day's probes per variant. Bottom: HR@10 of all probes up to each day.
Needs matplotlib (``pip install -e '.[dev]'``).

    .venv/bin/python bench/plot_streaming.py bench/results/streaming_eval.json \\
        docs/streaming_hr10.png
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import matplotlib.pyplot as plt

STYLE = {
    "product": {"color": "tab:blue", "linewidth": 2.2},
    "no-refit": {"color": "tab:cyan", "linewidth": 1.2, "linestyle": "--"},
    "frozen": {"color": "tab:orange", "linewidth": 1.8},
    "popularity": {"color": "tab:gray", "linewidth": 1.8},
}


def plot(report: dict, out: Path) -> None:
    daily = report["daily"]
    days = [date.fromisoformat(entry["day"]) for entry in daily]
    probes = [entry["probes"] for entry in daily]
    variants = [v for v in STYLE if v in daily[0]["HR@10"]]
    summary = report["summary"]["variants"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, dpi=110)
    for variant in variants:
        hits = [entry["HR@10"][variant] * entry["probes"] for entry in daily]
        mean = summary[variant]["HR@10"]["mean"]
        label = f"{variant} (HR@10 {mean:.3f})"
        top.plot(days, [entry["HR@10"][variant] for entry in daily], label=label, **STYLE[variant])
        cumulative, seen, total = [], 0.0, 0
        for hit, count in zip(hits, probes, strict=True):
            seen, total = seen + hit, total + count
            cumulative.append(seen / total)
        bottom.plot(days, cumulative, **STYLE[variant])
    top.set_ylabel("HR@10 of the day's probes")
    top.legend(loc="upper left", fontsize=9)
    top.grid(alpha=0.3)
    bottom.set_ylabel("HR@10 of all probes so far")
    bottom.grid(alpha=0.3)
    stream = report["stream_events"]
    top.set_title(
        f"Streaming HR@10, Online Retail: {report['warmup_events']:,} warm-up events, then "
        f"{stream:,} replayed ({report['summary']['probes']:,} probes)",
        fontsize=10,
    )
    figure.autofmt_xdate()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    plot(json.loads(args.report.read_text()), args.out)
    print(f"wrote {args.out}")
