"""The one worker launcher of tests and benchmarks: ``python -m app worker`` under an app id,
topics, Redis prefix, data folder and web port of its own, so that runs never share state and
never touch ``make up``'s worker.

A worker's topics are created before it starts, as ``make up`` does: a worker that starts before
its source topic exists may join its group without it and not consume it for minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import ROOT
from harness.commands import run_app
from harness.services import KAFKA_BOOTSTRAP, REDIS_URL, free_port, require_services

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0

TEST_SETTINGS = {
    "RECSYS_KAFKA_BROKER": f"kafka://{KAFKA_BOOTSTRAP}",
    "RECSYS_REDIS_URL": REDIS_URL,
    "RECSYS_PARTITIONS": "4",
    "RECSYS_ALS_FACTORS": "8",
    "RECSYS_ALS_ITERATIONS": "10",
    "RECSYS_NEW_ITEM_INTERVAL": "1",
}
"""What a test worker changes beyond its names: the test services, and a small, quick model."""


class WorkerFailed(RuntimeError):
    """A worker (or its topics' creation) failed; the message ends with its log or output."""


def isolated_env(folder: Path, run_id: str, namespace: str, **overrides: str) -> dict[str, str]:
    """This environment plus settings no other run shares: app id (the consumer group), topics
    (events, dead letters, catalogue), Redis prefix, data folder (under ``folder``) and web
    port. A shared ``items`` topic gave every later worker the catalogue one test loaded."""
    return {
        **os.environ,
        "RECSYS_APP_ID": f"{namespace}-{run_id}",
        "RECSYS_REDIS_PREFIX": f"{namespace}:{run_id}",
        "RECSYS_EVENTS_TOPIC": f"{run_id}-user-actions",
        "RECSYS_DEAD_LETTER_TOPIC": f"{run_id}-user-actions-dlq",
        "RECSYS_ITEMS_TOPIC": f"{run_id}-items",
        "RECSYS_DATA_DIR": str(folder / "data"),
        "RECSYS_WEB_PORT": str(free_port()),
        "OPENBLAS_NUM_THREADS": "1",
        **overrides,
    }


def worker_env(folder: Path, run_id: str | None = None, **overrides: str) -> dict[str, str]:
    """A test worker's settings: names of its own, the test Kafka and Redis, 4 partitions and
    a small model (``TEST_SETTINGS``), then ``overrides``."""
    run_id = run_id or f"t{uuid.uuid4().hex[:10]}"
    return isolated_env(folder, run_id, "test", **{**TEST_SETTINGS, **overrides})


def create_topics(env: dict[str, str]) -> None:
    """``python -m app create-topics`` with the worker's settings."""
    done = run_app(["create-topics"], env, timeout=120)
    if done.returncode != 0:
        raise WorkerFailed(f"create-topics exited with {done.returncode}:\n{done.stderr}")


class WorkerProcess:
    """One worker process with these settings. A drill may kill -9 it and start it again: the
    settings (names, port, data folder) stay, and the log goes on in the same file."""

    def __init__(
        self, env: dict[str, str], log_path: Path, python: str = sys.executable, cwd: Path = ROOT
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.python = python
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['RECSYS_WEB_PORT']}"

    @property
    def topic(self) -> str:
        return self.env["RECSYS_EVENTS_TOPIC"]

    @property
    def dead_letter_topic(self) -> str:
        return self.env["RECSYS_DEAD_LETTER_TOPIC"]

    @property
    def redis_prefix(self) -> str:
        return self.env["RECSYS_REDIS_PREFIX"]

    @property
    def data_dir(self) -> Path:
        return Path(self.env["RECSYS_DATA_DIR"])

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker was never started"
        return self.process.pid

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log yet)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        """Start the process; its output goes to the end of the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "app", "worker", "-l", "info"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds until ``/health`` answered 200 (tables recovered, Redis answering); raises
        WorkerFailed if the process dies first or is not ready in time."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise WorkerFailed(f"worker exited with {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise WorkerFailed(f"worker not ready within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed."""
        assert self.process is not None, "the worker was never started"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, the way a deployment stops a worker; SIGKILL if it has not exited in 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def running_worker(
    env: dict[str, str], log_path: Path, python: str = sys.executable, cwd: Path = ROOT
) -> Iterator[WorkerProcess]:
    """A worker with these settings (its topics created first), ready before the block and
    stopped after it, whatever happened to it inside. ``python`` and ``cwd`` run another
    installation of the product (the wheel's test)."""
    require_services(env)
    create_topics(env)
    worker = WorkerProcess(env, log_path, python, cwd)
    worker.start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@contextmanager
def running_trainer(
    env: dict[str, str], log_path: Path, module: str = "app.trainer"
) -> Iterator[subprocess.Popen[bytes]]:
    """A trainer process beside a worker started with ``RECSYS_RUN_TRAINER=false`` (``module``:
    another trainer, such as ``harness.bad_trainer``), stopped after the block."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
