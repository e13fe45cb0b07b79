"""Published models in Redis: full snapshots after fits, small deltas between them.

A snapshot is one blob (numpy ``.npz``: item factors, user Gram matrix, item ids, metadata)
under ``{prefix}:model:{version}``, published after a full fit. Between fits the trainer
publishes each new-item fold as a delta (the folded items' ids and factors) appended to the
list ``{prefix}:model:{version}:deltas`` of the snapshot it extends; delta ``n`` (1-based) is
served as version ``{sequence}-{time}+{snapshot sequence}.{n}``, so every name says which
snapshot and delta it is and ``version_sequence`` keeps counting up. ``{prefix}:model:snapshot``
names the snapshot, ``{prefix}:model:current`` the version to serve (all keys in
``app.stores.keys``). A snapshot's fit may also publish its user factors under
``{prefix}:model:{version}:users``, which workers read only to find similar users. Each
publication writes its data and moves the pointers in one transaction (a delta only onto
the current snapshot, as its next one); the last few snapshots are kept, with their deltas
and user factors, so a worker that is loading one never finds it gone. A worker
holding snapshot S with n deltas reads only the deltas after n; one on another snapshot reads
the current snapshot and all of its deltas (:meth:`ModelStore.sync`). The trainer's lease, the
retrain request and the progress of the current full fit live here too.
"""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis

from app import ranker
from app.stores.keys import RedisKeys

KEPT_VERSIONS = 3
FIT_PROGRESS_TTL = 3600

# Appends delta ARGV[2] (1-based) onto snapshot ARGV[1] and makes its version ARGV[3] current,
# only while ARGV[1] is the current snapshot and the delta is its next one.
_DELTA_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[2]) - 1 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""

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


def snapshot_sequence(version: str) -> int:
    """The sequence number of the snapshot a version is, or is a delta on."""
    _, plus, on = version.partition("+")
    return int(on.partition(".")[0]) if plus else version_sequence(version)


def delta_version(sequence: int, snapshot: str, delta: int) -> str:
    """The served name of delta ``delta`` (1-based) on ``snapshot``, given a new sequence."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{sequence}-{stamp}+{version_sequence(snapshot)}.{delta}"


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


def encode_delta(
    version: str,
    trained_at: float,
    item_ids: Sequence[str],
    item_factors: np.ndarray,
    metrics: dict[str, Any],
) -> bytes:
    """The published form of a delta: these items' ids and factors, and the resulting version."""
    meta = {
        "version": version,
        "trained_at": trained_at,
        "metrics": metrics,
        "item_ids": list(item_ids),
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        item_factors=np.asarray(item_factors, dtype=np.float32),
        meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
    )
    return buffer.getvalue()


def encode_user_factors(user_ids: Sequence[str], factors: np.ndarray) -> bytes:
    """The published form of a fit's user factors: float32 rows, row i for ``user_ids[i]``."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        factors=np.asarray(factors, dtype=np.float32),
        user_ids=np.frombuffer(orjson.dumps(list(user_ids)), dtype=np.uint8),
    )
    return buffer.getvalue()


def decode_user_factors(blob: bytes) -> tuple[list[str], np.ndarray]:
    """The user ids and factors of :func:`encode_user_factors`'s bytes."""
    with np.load(io.BytesIO(blob)) as arrays:
        return orjson.loads(arrays["user_ids"].tobytes()), arrays["factors"]


def delta_meta(blob: bytes) -> dict[str, Any]:
    """The metadata of :func:`encode_delta`'s bytes: its version, time, metrics and item ids."""
    with np.load(io.BytesIO(blob)) as arrays:
        return orjson.loads(arrays["meta"].tobytes())


def apply_delta(
    model: ranker.FactorModel, blob: bytes
) -> tuple[ranker.FactorModel, dict[str, Any]]:
    """The model plus :func:`encode_delta`'s items (:func:`app.ranker.with_items`)."""
    meta = delta_meta(blob)
    with np.load(io.BytesIO(blob)) as arrays:
        factors = arrays["item_factors"]
    model = ranker.with_items(model, meta["item_ids"], factors, meta["version"], meta["trained_at"])
    return model, meta


@dataclass(frozen=True)
class Published:
    """A model as published: its snapshot version, how many of its deltas are applied, and the
    metadata of the last publication applied (the snapshot's, or the last delta's)."""

    model: ranker.FactorModel
    snapshot: str
    deltas: int
    meta: dict[str, Any]

    @property
    def version(self) -> str:
        return self.model.version


def published_model(
    held: Published | None, snapshot: str, blob: bytes | None, deltas: Sequence[bytes]
) -> Published:
    """``held`` (or the snapshot ``blob``, when given) with ``deltas`` applied in order
    (CPU-bound: run it off the event loop)."""
    if blob is not None:
        model, meta = decode_model(blob)
        held = Published(model, snapshot, 0, meta)
    assert held is not None
    model, meta, count = held.model, held.meta, held.deltas
    for delta in deltas:
        model, meta = apply_delta(model, delta)
        count += 1
    return Published(model, snapshot, count, meta)


Offload = Callable[..., Awaitable[Published]]
"""Runs ``published_model(*args)`` off the event loop: ``offload(published_model, *args)``."""


class ModelStore:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._key = keys.model
        self._lease = redis.register_script(_LEASE_SCRIPT)
        self._delta = redis.register_script(_DELTA_SCRIPT)

    async def next_version(self) -> str:
        """A new version name: a deployment-wide sequence number and the time."""
        sequence = await self.redis.incr(self._key("sequence"))
        return f"{sequence}-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

    async def next_delta_version(self, snapshot: str, delta: int) -> str:
        """A new version name for delta ``delta`` (1-based) on ``snapshot``."""
        return delta_version(await self.redis.incr(self._key("sequence")), snapshot, delta)

    async def publish(self, version: str, blob: bytes, users: bytes | None = None) -> None:
        """Store a snapshot, with its fit's user factors if given, and make it current
        (superseding the last one's deltas); drop snapshots, and their deltas and user factors,
        older than the last few."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(version), blob)
            if users is not None:
                pipe.set(self.keys.model_users(version), users)
            pipe.set(self._key("current"), version)
            pipe.set(self._key("snapshot"), version)
            pipe.lpush(self._key("versions"), version)
            pipe.lrange(self._key("versions"), KEPT_VERSIONS, -1)
            pipe.ltrim(self._key("versions"), 0, KEPT_VERSIONS - 1)
            *_, expired, _ = await pipe.execute()
        if expired:
            old = [old.decode() for old in expired]
            await self.redis.delete(
                *(self._key(v) for v in old),
                *(self.keys.model_deltas(v) for v in old),
                *(self.keys.model_users(v) for v in old),
            )

    async def publish_delta(self, snapshot: str, delta: int, version: str, blob: bytes) -> bool:
        """Append delta ``delta`` (1-based) to ``snapshot`` and make ``version`` current, in one
        step; False (nothing written) unless ``snapshot`` is current and has ``delta - 1``."""
        keys = [self._key("snapshot"), self.keys.model_deltas(snapshot), self._key("current")]
        return bool(await self._delta(keys=keys, args=[snapshot, delta, version, blob]))

    async def add_live_trials(self, counts: Mapping[str, Sequence[int]]) -> None:
        """Add a worker's live test-then-learn trials and hits per model version to the
        deployment's counts, which are kept per snapshot (a delta counts for its snapshot)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for version, (trials, hits) in counts.items():
                snapshot = snapshot_sequence(version)
                pipe.hincrby(self._key("live"), f"{snapshot}:trials", trials)
                pipe.hincrby(self._key("live"), f"{snapshot}:hits", hits)
            await pipe.execute()

    async def live_counts(self, snapshot: str) -> tuple[int, int]:
        """The deployment's live trials and hits of lists ranked by this snapshot or its deltas."""
        sequence = version_sequence(snapshot)
        fields = (f"{sequence}:trials", f"{sequence}:hits")
        trials, hits = await self.redis.hmget(self._key("live"), fields)
        return int(trials or 0), int(hits or 0)

    async def kept_snapshots(self) -> list[str]:
        """The snapshots kept, newest first."""
        return [
            version.decode() for version in await self.redis.lrange(self._key("versions"), 0, -1)
        ]

    async def record_rollback(self, record: dict[str, Any]) -> None:
        """An automatic rollback: why, for ``GET /health``."""
        await self.redis.set(self._key("rollback"), orjson.dumps({"at": time.time(), **record}))

    async def last_rollback(self) -> dict[str, Any] | None:
        raw = await self.redis.get(self._key("rollback"))
        return None if raw is None else orjson.loads(raw)

    async def roll_back(self) -> str | None:
        """Serve the snapshot published before the current one again, with its deltas, and
        drop the current one (blob, deltas, user factors), so a second rollback goes further
        back. Returns the version now current, or None (nothing changed) when no earlier
        snapshot is kept. Workers switch at their next look at ``current``; so does the trainer.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self._key("snapshot"), self._key("versions"))
            snapshot = await pipe.get(self._key("snapshot"))
            kept = [version.decode() for version in await pipe.lrange(self._key("versions"), 0, -1)]
            current = None if snapshot is None else snapshot.decode()
            if current not in kept or kept.index(current) + 1 == len(kept):
                return None
            previous = kept[kept.index(current) + 1]
            last_delta = await pipe.lindex(self.keys.model_deltas(previous), -1)
            version = previous if last_delta is None else delta_meta(last_delta)["version"]
            pipe.multi()
            pipe.set(self._key("snapshot"), previous)
            pipe.set(self._key("current"), version)
            pipe.lrem(self._key("versions"), 0, current)
            pipe.delete(
                self._key(current), self.keys.model_deltas(current), self.keys.model_users(current)
            )
            sequence = version_sequence(current)
            pipe.hdel(self._key("live"), f"{sequence}:trials", f"{sequence}:hits")
            await pipe.execute()
        return version

    async def snapshot_version(self) -> str | None:
        """The current snapshot's version (the last full fit's)."""
        version = await self.redis.get(self._key("snapshot"))
        return None if version is None else version.decode()

    async def sync(self, held: Published | None, offload: Offload) -> Published | None:
        """The current model if it is not ``held``'s, else None.

        On ``held``'s snapshot only the deltas it lacks are read and applied; otherwise the
        current snapshot and all its deltas (both read in one transaction). Decoding runs in
        ``offload``. None too when the snapshot went while being read (the next call retries).
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key("snapshot"))
            pipe.get(self._key("current"))
            snapshot, current = await pipe.execute()
        if current is None:
            return None
        # A model published before deltas existed has no snapshot pointer: it is one.
        snapshot = (snapshot or current).decode()
        if held is not None and held.snapshot == snapshot:
            if held.version == current.decode():
                return None
            deltas = await self.redis.lrange(self.keys.model_deltas(snapshot), held.deltas, -1)
            if not deltas:
                return None
            return await offload(published_model, held, snapshot, None, deltas)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key(snapshot))
            pipe.lrange(self.keys.model_deltas(snapshot), 0, -1)
            blob, deltas = await pipe.execute()
        if blob is None:
            return None
        return await offload(published_model, None, snapshot, blob, deltas)

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

    async def record_check(self, version: str, verdict: dict[str, Any]) -> None:
        """The check of the candidate ``version`` against the serving model
        (:class:`app.model_check.Verdict`), and one more refusal when it was refused."""
        record = {"version": version, "at": time.time(), **verdict}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("check"), orjson.dumps(record))
            if not verdict["accepted"]:
                pipe.incr(self._key("refused"))
            await pipe.execute()

    async def last_check(self) -> tuple[dict[str, Any] | None, int]:
        """The last check recorded (None before the first) and how many candidates were refused."""
        check, refused = await self.redis.mget(self._key("check"), self._key("refused"))
        return (None if check is None else orjson.loads(check)), int(refused or 0)

    async def current_version(self) -> str | None:
        version = await self.redis.get(self._key("current"))
        return None if version is None else version.decode()

    async def load(self, version: str) -> bytes | None:
        return await self.redis.get(self._key(version))

    async def load_user_factors(self, snapshot: str) -> bytes | None:
        """The user factors published with ``snapshot``; None when its fit published none."""
        return await self.redis.get(self.keys.model_users(snapshot))

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
