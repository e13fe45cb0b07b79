"""What every kind of test shares: its marker by folder, and one HTTP client session.

- ``unit/``: no services at all (no Kafka, no Redis, no worker); ``pytest tests/unit`` passes
  with both stopped.
- ``integration/``: against the real Kafka and Redis that ``make test`` starts, each with
  workers of its own (``harness.worker``); marked ``integration``.
- ``drills/``: failures on purpose (kill -9, a broker restart, Redis lost, a failover); slow;
  marked ``drill`` and, as they also run against the real services, ``integration``.

Helpers shared by tests live in ``harness/``: a test module never imports another one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

HERE = Path(__file__).resolve().parent
MARKERS = {"integration": ("integration",), "drills": ("integration", "drill")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the folder it is filed in, so no module has to say it again."""
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        for marker in MARKERS.get(item.path.relative_to(HERE).parts[0], ()):
            item.add_marker(marker)


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
