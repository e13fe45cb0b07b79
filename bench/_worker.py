"""A worker of the benchmark's own: unique app id, topics, Redis prefix, data folder and port.

Benchmarks never touch the default names (``make up``'s worker) or another run's data. The
worker's log goes to bench/results/logs/; its Redis keys are deleted when it stops (Kafka topics
are left, as the tests leave theirs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class OwnWorker:
    """``with OwnWorker(name, RECSYS_X=...) as worker:`` a healthy worker, stopped afterwards."""

    def __init__(self, name: str, **overrides: str) -> None:
        run_id = f"b{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.folder = RESULTS / "workers" / f"{name}-{run_id}"
        self.env = {
            **os.environ,
            "RECSYS_APP_ID": f"bench-{run_id}",
            "RECSYS_REDIS_PREFIX": f"bench:{run_id}",
            "RECSYS_EVENTS_TOPIC": f"{run_id}-user-actions",
            "RECSYS_DEAD_LETTER_TOPIC": f"{run_id}-user-actions-dlq",
            "RECSYS_DATA_DIR": str(self.folder / "data"),
            "RECSYS_WEB_PORT": str(self.port),
            "OPENBLAS_NUM_THREADS": "1",
            **overrides,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = RESULTS / "logs" / f"{name}-{run_id}.log"
        self.process: subprocess.Popen | None = None

    @property
    def prefix(self) -> str:
        return self.env["RECSYS_REDIS_PREFIX"]

    @property
    def topic(self) -> str:
        return self.env["RECSYS_EVENTS_TOPIC"]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> OwnWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "worker", "-l", "info"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"worker not healthy in 120 s; see {self.log_path}")

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        redis = Redis.from_url(self.env.get("RECSYS_REDIS_URL", "redis://127.0.0.1:6379/0"))
        for key in redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            redis.delete(key)
        redis.close()


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
    print(f"wrote {out.relative_to(ROOT)}")


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
