"""What the benchmarks share beyond harness/: a worker of their own, process memory, the machine
they ran on, their JSON reports and wrk.

A benchmark's worker runs with the product's settings under names of its own (harness/), so it
never touches ``make up``'s worker or another run's data. Its log goes to bench/results/logs/;
its Redis keys are deleted when it stops (Kafka topics are left, as the tests leave theirs).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaProducer
from redis import Redis

from app.settings import Settings
from harness import ROOT
from harness.services import KAFKA_BOOTSTRAP
from harness.worker import WorkerProcess, isolated_env, running_worker

RESULTS = ROOT / "bench" / "results"


@contextmanager
def own_settings(name: str, **overrides: str) -> Iterator[tuple[dict[str, str], Path]]:
    """``with own_settings(name, RECSYS_X=...) as (env, folder):`` a worker environment no
    other run shares and a folder for its files; its Redis keys are deleted afterwards."""
    run_id = f"b{uuid.uuid4().hex[:8]}"
    folder = RESULTS / "workers" / f"{name}-{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    env = isolated_env(folder, run_id, "bench", **overrides)
    try:
        yield env, folder
    finally:
        settings = Settings.from_env(env)
        redis = Redis.from_url(settings.redis_url)
        for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
            redis.delete(key)
        redis.close()


def log_path(name: str, env: dict[str, str]) -> Path:
    """Where a benchmark worker of this environment logs."""
    return RESULTS / "logs" / f"{name}-{env['RECSYS_APP_ID']}.log"


@contextmanager
def own_worker(name: str, **overrides: str) -> Iterator[WorkerProcess]:
    """``with own_worker(name, RECSYS_X=...) as worker:`` a ready worker, stopped afterwards,
    and its Redis keys deleted even if it never became ready."""
    with (
        own_settings(name, **overrides) as (env, _),
        running_worker(env, log_path(name, env)) as worker,
    ):
        yield worker


async def produce_backlog(topic: str, messages: Iterable[tuple[bytes, bytes]]) -> float:
    """Send every (key, value) (acks=all, murmur2 by key as the worker places users), many
    sends in flight; the seconds until all were acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA_BOOTSTRAP, linger_ms=20, acks="all", max_batch_size=1 << 20
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a worker's trainer), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def machine() -> dict[str, object]:
    """nproc, RAM and CPU model, for the JSON of every benchmark."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(int(memory) / 2**20, 1),
        "cpu": cpu,
        "load_average_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_report(report: object, name: str, indent: int = 2) -> None:
    """Write a run's JSON report as ``bench/results/<name>`` and say where."""
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=indent))
    print(f"wrote {out}")


WRK_SUMMARY = Path(__file__).with_name("wrk_summary.lua")


def run_wrk(
    url: str, script: Path, connections: int, seconds: int, env: dict[str, str]
) -> tuple[dict[str, object], str]:
    """One wrk run (one thread) with a bench/ Lua script; its JSON summary and whole output."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "WRK_SUMMARY": str(WRK_SUMMARY), "PATH": "/usr/bin:/bin"},
    ).stdout
    return json.loads(re.search(r"^JSON (.*)$", out, re.M).group(1)), out
