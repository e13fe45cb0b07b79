"""Processes and ground truth for failure drills: workers to kill -9, a Kafka broker and a Redis
server of their own (never the shared ones on 9092 and 6379), and the state a stream must yield.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.settings import Settings
from tests.conftest import ROOT, Worker, create_topics, free_port

ACTIONS = ("view", "view", "view", "click", "click", "purchase", "return", "share")


class WorkerProcess:
    """One worker that a drill can kill -9 and start again with the same settings."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def worker(self) -> Worker:
        return Worker(f"http://127.0.0.1:{self.env['RECSYS_WEB_PORT']}", self.env, self.log_path)

    @property
    def url(self) -> str:
        return self.worker.url

    @property
    def data_dir(self) -> Path:
        return Path(self.env["RECSYS_DATA_DIR"])

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "worker", "-l", "info"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds until ``/health`` answered 200; fails the test if the worker dies first."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is None or self.process.poll() is not None:
                pytest.fail(f"worker exited:\n{self.worker.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        pytest.fail(f"worker not ready within {timeout} s:\n{self.worker.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@contextmanager
def worker_process(env: dict[str, str], log_path: Path) -> Iterator[WorkerProcess]:
    """A started, ready worker (its topics created first); stopped at the end of the block."""
    create_topics(env)
    process = WorkerProcess(env, log_path)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


class KafkaBroker:
    """A single-node broker of the drill's own, on free ports, run by scripts/services.sh."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATA_DIR": str(folder),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
            "KAFKA_HEAP": "-Xmx384m -Xms128m",
        }
        resolved = ROOT / ".data" / "kafka" / "classpath.txt"
        if resolved.exists():  # skip Maven: the shared broker's jars are the same
            (folder / "kafka").mkdir(parents=True, exist_ok=True)
            shutil.copy(resolved, folder / "kafka" / "classpath.txt")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _services(self, action: str) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "services.sh"), action, "kafka"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=180,
        )

    def start(self) -> None:
        self._services("start")

    def stop(self) -> None:
        self._services("stop")


class RedisServer:
    """A Redis of the drill's own without persistence: a restart comes back empty."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"redis-server did not listen on {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def random_events(count: int, users: range, items: int, seed: int) -> list[dict[str, Any]]:
    """A reproducible stream over these users, every action kind, explicit past timestamps."""
    rng = random.Random(seed)
    now = time.time()
    return [
        {
            "user_id": f"user-{rng.choice(users)}",
            "item_id": f"item-{rng.randrange(items)}",
            "action": rng.choice(ACTIONS),
            "timestamp": round(now - rng.uniform(60, 30 * 24 * 3600), 3),
        }
        for _ in range(count)
    ]


def expected_states(events: list[dict[str, Any]], settings: Settings) -> dict[str, dict[str, Any]]:
    """Ground truth: each user's state as ``GET /users/{id}`` must show it, computed here."""
    states: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"event_count": 0, "last_event_at": 0.0, "interactions": {}}
    )
    for event in events:
        state = states[event["user_id"]]
        state["event_count"] += 1
        state["last_event_at"] = max(state["last_event_at"], event["timestamp"])
        entry = state["interactions"].setdefault(
            event["item_id"], {"weight": 0.0, "count": 0, "last_at": 0.0}
        )
        entry["weight"] += settings.weight(event["action"])
        entry["count"] += 1
        entry["last_at"] = max(entry["last_at"], event["timestamp"])
    return dict(states)


async def read_states(
    http: aiohttp.ClientSession, url: str, users: list[str], concurrency: int = 16
) -> dict[str, dict[str, Any] | None]:
    """Every listed user's ``GET /users/{id}`` body (None for a 404)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(user_id: str) -> tuple[str, dict[str, Any] | None]:
        async with limit, http.get(f"{url}/users/{user_id}") as response:
            if response.status == 404:
                return user_id, None
            assert response.status == 200, await response.text()
            body = await response.json()
            return user_id, {
                key: body[key] for key in ("event_count", "last_event_at", "interactions")
            }

    return dict(await asyncio.gather(*(one(user_id) for user_id in users)))


def count_differences(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any] | None]
) -> tuple[int, int]:
    """(events missing, events counted twice or more), summed over every user and item."""
    missing = extra = 0
    for user_id, truth in expected.items():
        state = actual.get(user_id) or {"interactions": {}}
        for item_id, entry in truth["interactions"].items():
            got = state["interactions"].get(item_id, {"count": 0})["count"]
            missing += max(0, entry["count"] - got)
            extra += max(0, got - entry["count"])
        for item_id, entry in state["interactions"].items():
            if item_id not in truth["interactions"]:
                extra += entry["count"]
    return missing, extra


def states_equal(expected: dict[str, Any], actual: dict[str, Any] | None) -> bool:
    """Counts and times exactly, weights up to float rounding."""
    if actual is None or actual["event_count"] != expected["event_count"]:
        return False
    if actual["last_event_at"] != pytest.approx(expected["last_event_at"], abs=1e-6):
        return False
    if set(actual["interactions"]) != set(expected["interactions"]):
        return False
    return all(
        got["count"] == want["count"]
        and got["weight"] == pytest.approx(want["weight"], abs=1e-9)
        and got["last_at"] == pytest.approx(want["last_at"], abs=1e-6)
        for item_id, want in expected["interactions"].items()
        for got in [actual["interactions"][item_id]]
    )
