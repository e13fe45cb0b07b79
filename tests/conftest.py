"""Fixtures for integration tests: a real worker process against the real Kafka and Redis.

``make test`` starts Kafka and Redis (scripts/services.sh). Each test session starts its own
worker with a unique app id, topics, Redis prefix and data folder, so runs never share state.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
KAFKA_BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Worker:
    """A running worker and the names it was configured with."""

    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def topic(self) -> str:
        return self.env["RECSYS_EVENTS_TOPIC"]

    @property
    def dead_letter_topic(self) -> str:
        return self.env["RECSYS_DEAD_LETTER_TOPIC"]

    @property
    def redis_prefix(self) -> str:
        return self.env["RECSYS_REDIS_PREFIX"]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _services_reachable() -> bool:
    for port in (int(KAFKA_BOOTSTRAP.rsplit(":", 1)[1]), 6379):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
    return True


def worker_env(folder: Path, run_id: str | None = None, **overrides: str) -> dict[str, str]:
    """Settings of a worker with its own app id, topics, Redis prefix, data folder and port."""
    run_id = run_id or f"t{uuid.uuid4().hex[:10]}"
    return {
        **os.environ,
        "RECSYS_APP_ID": f"recsys-{run_id}",
        "RECSYS_KAFKA_BROKER": f"kafka://{KAFKA_BOOTSTRAP}",
        "RECSYS_REDIS_URL": REDIS_URL,
        "RECSYS_REDIS_PREFIX": f"test:{run_id}",
        "RECSYS_EVENTS_TOPIC": f"{run_id}-user-actions",
        "RECSYS_DEAD_LETTER_TOPIC": f"{run_id}-user-actions-dlq",
        "RECSYS_PARTITIONS": "4",
        "RECSYS_DATA_DIR": str(folder / "data"),
        "RECSYS_WEB_PORT": str(free_port()),
        "RECSYS_ALS_FACTORS": "8",
        "RECSYS_ALS_ITERATIONS": "10",
        "RECSYS_NEW_ITEM_INTERVAL": "1",
        "OPENBLAS_NUM_THREADS": "1",
        **overrides,
    }


def create_topics(env: dict[str, str]) -> None:
    """Create the worker's topics first, as ``make up`` does. A worker that starts before its
    source topic exists may join its group without it and not consume it for minutes."""
    subprocess.run(
        [sys.executable, "-m", "app", "create-topics"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[Worker]:
    """A worker process with these settings, healthy before the block and stopped after it."""
    if not _services_reachable():
        pytest.fail("Kafka and Redis must run for integration tests: `make test` starts them")
    create_topics(env)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "-l", "info"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = Worker(f"http://127.0.0.1:{env['RECSYS_WEB_PORT']}", env, log_path, process)
    try:
        _wait_healthy(started, process, timeout=120)
        yield started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(worker: Worker, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode}:\n{worker.log_tail()}")
        try:
            with urllib.request.urlopen(f"{worker.url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    pytest.fail(f"worker not healthy within {timeout} s:\n{worker.log_tail()}")


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    folder = tmp_path_factory.mktemp("worker")
    with running_worker(worker_env(folder), folder / "worker.log") as started:
        yield started


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def eventually(
    probe: Callable[[], Awaitable[T | None]], within: float, interval: float = 0.02
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def get_metric(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` (with these labels) at the worker's ``/metrics``."""
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()
