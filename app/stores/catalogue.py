"""Redis: the item catalogue, shared by all workers.

``{prefix}:items`` is a hash of item id -> JSON record (:func:`encode_item`),
``{prefix}:items:unavailable`` the set of ids whose record says ``available: false``, and
``{prefix}:items:version`` a counter bumped by every write. A worker keeps the version its
catalogue snapshot (``app.serving.CatalogueSnapshot``) was built from and rebuilds only when
the counter moved.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from redis.asyncio import Redis

from app.models import ItemRecord
from app.stores.keys import RedisKeys

SCAN_CHUNK = 1000


def encode_item(record: ItemRecord) -> bytes:
    """The stored form of a record: compact JSON."""
    return orjson.dumps(record)


def decode_item(raw: bytes | str) -> ItemRecord:
    """A stored record; fields missing from older records take their defaults."""
    data = orjson.loads(raw)
    return ItemRecord(
        item_id=data["item_id"],
        title=data.get("title", ""),
        description=data.get("description", ""),
        categories=tuple(data.get("categories", ())),
        tags=tuple(data.get("tags", ())),
        available=data.get("available", True),
        hidden_until=data.get("hidden_until"),
    )


class CatalogueStore:
    """Reads and writes the catalogue in Redis."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys

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
            pipe.hset(self.keys.items, mapping={i: encode_item(r) for i, r in latest.items()})
            if unavailable:
                pipe.sadd(self.keys.unavailable_items, *unavailable)
            if available:
                pipe.srem(self.keys.unavailable_items, *available)
            pipe.incr(self.keys.catalogue_version)
            *_, version = await pipe.execute()
        return int(version)

    async def get(self, item_id: str) -> ItemRecord | None:
        raw = await self.redis.hget(self.keys.items, item_id)
        return None if raw is None else decode_item(raw)

    async def all(self) -> list[ItemRecord]:
        """Every record, read in HSCAN chunks so Redis is never blocked by one huge reply.

        Read :meth:`version` before this: a write made during the scan then shows up as a newer
        version at the next check. HSCAN may return a field twice; each id is kept once.
        """
        records: dict[bytes | str, ItemRecord] = {}
        async for item_id, raw in self.redis.hscan_iter(self.keys.items, count=SCAN_CHUNK):
            records[item_id] = decode_item(raw)
        return list(records.values())

    async def unavailable(self) -> set[str]:
        """Ids of the items that must not be recommended."""
        members = await self.redis.smembers(self.keys.unavailable_items)
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def version(self) -> int:
        """The number of writes so far; 0 for an empty catalogue."""
        return int(await self.redis.get(self.keys.catalogue_version) or 0)
