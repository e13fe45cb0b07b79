"""Redis: the item catalogue, shared by all workers.

``{prefix}:items`` is a hash of item id -> JSON record (``catalogue.to_json``),
``{prefix}:items:unavailable`` the set of ids whose record says ``available: false``, and
``{prefix}:items:version`` a counter bumped by every write. A worker keeps the version its
:class:`~app.catalogue.ContentIndex` was built from and rebuilds only when the counter moved.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from app.catalogue import ItemRecord, from_json, to_json

SCAN_CHUNK = 1000


class CatalogueStore:
    """Reads and writes the catalogue in Redis."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    @property
    def items_key(self) -> str:
        return f"{self.prefix}:items"

    @property
    def unavailable_key(self) -> str:
        return f"{self.prefix}:items:unavailable"

    @property
    def version_key(self) -> str:
        return f"{self.prefix}:items:version"

    async def put(self, records: Iterable[ItemRecord]) -> int:
        """Insert or replace records; returns the catalogue version that includes them.

        One MULTI/EXEC round trip, so a reader never sees a record without its availability
        or the new version without the records. Of two records with the same id, the later
        wins. Writing nothing leaves the version as it was.
        """
        latest = {record.item_id: record for record in records}
        if not latest:
            return await self.version()
        unavailable = [item_id for item_id, record in latest.items() if not record.available]
        available = [item_id for item_id, record in latest.items() if record.available]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.items_key, mapping={i: to_json(r) for i, r in latest.items()})
            if unavailable:
                pipe.sadd(self.unavailable_key, *unavailable)
            if available:
                pipe.srem(self.unavailable_key, *available)
            pipe.incr(self.version_key)
            *_, version = await pipe.execute()
        return int(version)

    async def get(self, item_id: str) -> ItemRecord | None:
        raw = await self.redis.hget(self.items_key, item_id)
        return None if raw is None else from_json(raw)

    async def all(self) -> list[ItemRecord]:
        """Every record, read in HSCAN chunks so Redis is never blocked by one huge reply.

        Read :meth:`version` before this: a write made during the scan then shows up as a newer
        version at the next check. HSCAN may return a field twice; each id is kept once.
        """
        records: dict[bytes | str, ItemRecord] = {}
        async for item_id, raw in self.redis.hscan_iter(self.items_key, count=SCAN_CHUNK):
            records[item_id] = from_json(raw)
        return list(records.values())

    async def unavailable(self) -> set[str]:
        """Ids of the items that must not be recommended."""
        members = await self.redis.smembers(self.unavailable_key)
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def version(self) -> int:
        """The number of writes so far; 0 for an empty catalogue."""
        return int(await self.redis.get(self.version_key) or 0)
