"""In-memory stand-ins for the unit tests, which run without Kafka or Redis."""

from __future__ import annotations

from typing import Any


class FakeModels:
    """The part of ModelStore the trainer uses, in memory."""

    def __init__(self, deltas_accepted: bool = True) -> None:
        self.published: list[str] = []
        self.user_factors: dict[str, bytes | None] = {}
        self.sequence = 0
        self.deltas_accepted = deltas_accepted
        self.checks: list[tuple[str, dict[str, Any]]] = []

    async def next_version(self) -> str:
        self.sequence += 1
        return f"{self.sequence}-test"

    async def report_fit(self, version: str, iteration: int, iterations: int) -> None:
        pass

    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return True

    async def next_delta_version(self, snapshot: str, delta: int) -> str:
        self.sequence += 1
        return f"{self.sequence}-test+{snapshot}.{delta}"

    async def snapshot_version(self) -> str | None:
        snapshots = await self.kept_snapshots()
        return snapshots[0] if snapshots else None

    async def kept_snapshots(self) -> list[str]:
        return [version for version in reversed(self.published) if "+" not in version]

    async def live_counts(self, snapshot: str) -> tuple[int, int]:
        return 0, 0  # no worker tests lists here

    async def publish(self, version: str, blob: bytes, users: bytes | None = None) -> None:
        self.published.append(version)
        self.user_factors[version] = users

    async def publish_delta(self, snapshot: str, delta: int, version: str, blob: bytes) -> bool:
        if self.deltas_accepted:
            self.published.append(version)
        return self.deltas_accepted

    async def take_retrain_request(self) -> bool:
        return False

    async def record_check(self, version: str, verdict: dict[str, Any]) -> None:
        self.checks.append((version, verdict))
