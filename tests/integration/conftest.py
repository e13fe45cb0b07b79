"""The session's worker: one real worker process against the real Kafka and Redis, with an app
id, topics, Redis prefix and data folder of its own, shared by the tests that need no other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.worker import WorkerProcess, running_worker, worker_env


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    folder = tmp_path_factory.mktemp("worker")
    with running_worker(worker_env(folder), folder / "worker.log") as started:
        yield started
