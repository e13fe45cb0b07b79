"""Published models in Redis: one current version that every worker loads and switches to.

A model is one blob (numpy ``.npz``: item factors, user Gram matrix, item ids, metadata) under
``{prefix}:model:{version}``; ``{prefix}:model:current`` names the version to serve (all keys in
``app.stores.keys``). Publishing
writes the blob and moves the pointer in one transaction, and keeps the last few versions so a
worker that is loading one never finds it gone. The trainer's lease, the retrain request and
the progress of the current full fit live here too.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis

from app import ranker
from app.stores.keys import RedisKeys

KEPT_VERSIONS = 3
FIT_PROGRESS_TTL = 3600

# Extends (ARGV[2] > 0) or drops the lease, only while this owner holds it.
_LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('DEL', KEYS[1])
"""


def version_sequence(version: str) -> int:
    """The deployment-wide sequence number that starts a version name: later is larger."""
    return int(version.partition("-")[0])


def encode_model(model: ranker.FactorModel, metrics: dict[str, Any]) -> bytes:
    """The published form of a model (CPU-bound: run it off the event loop)."""
    meta = {
        "version": model.version,
        "trained_at": model.trained_at,
        "params": asdict(model.params),
        "metrics": metrics,
        "item_ids": list(model.item_ids),
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        item_factors=np.asarray(model.item_factors, dtype=np.float32),
        user_gram=model.user_gram,
        meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
    )
    return buffer.getvalue()


def decode_model(blob: bytes) -> tuple[ranker.FactorModel, dict[str, Any]]:
    """A servable model and its metadata from :func:`encode_model`'s bytes."""
    with np.load(io.BytesIO(blob)) as arrays:
        meta = orjson.loads(arrays["meta"].tobytes())
        model = ranker.model_from_factors(
            meta["version"],
            meta["trained_at"],
            meta["item_ids"],
            arrays["item_factors"],
            arrays["user_gram"],
            ranker.AlsParams(**meta["params"]),
        )
    return model, meta


class ModelStore:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._key = keys.model
        self._lease = redis.register_script(_LEASE_SCRIPT)

    async def next_version(self) -> str:
        """A new version name: a deployment-wide sequence number and the time."""
        sequence = await self.redis.incr(self._key("sequence"))
        return f"{sequence}-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

    async def publish(self, version: str, blob: bytes) -> None:
        """Store a model and make it current; drop versions older than the last few."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(version), blob)
            pipe.set(self._key("current"), version)
            pipe.lpush(self._key("versions"), version)
            pipe.lrange(self._key("versions"), KEPT_VERSIONS, -1)
            pipe.ltrim(self._key("versions"), 0, KEPT_VERSIONS - 1)
            *_, expired, _ = await pipe.execute()
        if expired:
            await self.redis.delete(*(self._key(old.decode()) for old in expired))

    async def last_sequence(self) -> int:
        """The sequence number of the last version handed out, 0 before the first."""
        return int(await self.redis.get(self._key("sequence")) or 0)

    async def report_fit(self, version: str, iteration: int, iterations: int) -> None:
        """Where the trainer's full fit of ``version`` is, for ``python -m app retrain``."""
        record = {"version": version, "iteration": iteration, "iterations": iterations}
        await self.redis.set(self._key("fitting"), orjson.dumps(record), ex=FIT_PROGRESS_TTL)

    async def fit_progress(self) -> dict[str, Any] | None:
        """The last full fit reported: its version and how many iterations of how many ran."""
        raw = await self.redis.get(self._key("fitting"))
        return None if raw is None else orjson.loads(raw)

    async def current_version(self) -> str | None:
        version = await self.redis.get(self._key("current"))
        return None if version is None else version.decode()

    async def load(self, version: str) -> bytes | None:
        return await self.redis.get(self._key(version))

    async def request_retrain(self) -> None:
        await self.redis.set(self._key("retrain-requested"), time.time())

    async def take_retrain_request(self) -> bool:
        """True once per request: the trainer consumes it."""
        return await self.redis.getdel(self._key("retrain-requested")) is not None

    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        """Take or extend the trainer lease; only its holder trains and publishes."""
        key = self._key("trainer-lease")
        if await self.redis.set(key, owner, nx=True, px=ttl_ms):
            return True
        return bool(await self._lease(keys=[key], args=[owner, ttl_ms]))

    async def release_lease(self, owner: str) -> None:
        """Give the lease up at once, so a standby trainer need not wait for it to expire."""
        await self._lease(keys=[self._key("trainer-lease")], args=[owner, 0])

    async def lease_holder(self) -> str | None:
        owner = await self.redis.get(self._key("trainer-lease"))
        return None if owner is None else owner.decode()
