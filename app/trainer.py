"""The trainer: one per deployment, it sees every user's interactions and publishes the model.

Run as ``python -m app.trainer``; each worker starts one beside itself (``RECSYS_RUN_TRAINER``),
and a lease in Redis lets exactly one of them train while the others wait to take over. The
active trainer tails the user-state changelog topic from the beginning, so it holds every
user's current row whichever worker owns the user. It fits ALS when there is data but no model,
on request, every ``RECSYS_RETRAIN_INTERVAL`` seconds and when the data grew by
``RECSYS_RETRAIN_GROWTH``; between fits it folds items first seen after the last fit into the
published model every ``RECSYS_NEW_ITEM_INTERVAL`` seconds. A trainer that starts with a model
already published continues from it instead of refitting.

Rows live in numpy buffers (:class:`app.interactions.Interactions`: 8 to 9 bytes per pair,
plus an index entry per user and per item), not in per-pair Python objects. A full fit runs as
a background task: the CSR is built from a snapshot and ALS solved in threads while the
changelog tail keeps applying records (and renewing the lease); what arrives meanwhile counts
towards the next fit's growth and the next new-item fold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import operator
import os
import signal
import socket
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import RedisError
from scipy.sparse import csr_matrix

from app import kafka_clients, model_check, ranker
from app.interactions import Interactions, RowsView, Snapshot
from app.models import COUNT, LAST_AT, WEIGHT
from app.retraining import RetrainPolicy, als_params
from app.settings import Settings
from app.state_codec import decode_state
from app.stores import Stores
from app.stores.model import ModelStore, encode_delta, encode_model, encode_user_factors
from app.tables import changelog_topic

log = logging.getLogger("app.trainer")

LEASE_TTL_MS = 10_000
TICK_SECONDS = 0.5
RESTART_DELAY = 5.0

_weight = operator.itemgetter(WEIGHT)  # of a state's per-item entry


class Trainer:
    def __init__(self, settings: Settings, models: ModelStore, owner: str) -> None:
        self.settings = settings
        self.policy = RetrainPolicy.of(settings)
        self.models = models
        self.owner = owner
        self.interactions = Interactions()
        self.model: ranker.FactorModel | None = None
        self.snapshot: str | None = None  # the published snapshot self.model extends
        self.deltas = 0  # how many deltas on it self.model includes
        self._known = np.zeros(0, dtype=bool)  # item position -> known to self.model
        self.new_item_users: defaultdict[str, set[str]] = defaultdict(set)
        self.events_at_fit = 0
        self.last_fit_at = time.monotonic()
        self.last_fold_at = 0.0
        self.fitting: asyncio.Task[None] | None = None
        # (user, item) -> arrival number of the record that first brought the pair, for the
        # check of a candidate (app.model_check): the newest check_pairs of them.
        self.first_pairs: dict[tuple[str, str], int] = {}
        self.arrivals = 0
        self.arrivals_at_fit = 0  # the serving model has seen every pair up to this arrival
        self.on_trial = False  # the serving model is a fit of this trainer's, compared live

    @property
    def rows(self) -> RowsView:
        """Read-only ``user id -> {item id: weight}``, each row built when read."""
        return self.interactions.rows()

    @property
    def events(self) -> int:
        return self.interactions.events

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One changelog record: the user's latest state (a tombstone removes the user)."""
        user_id = key.decode()
        if value is None:
            self.interactions.remove(user_id)
            return
        state = decode_state(value)
        entries = state["items"]
        weights = list(map(_weight, entries.values()))
        event_count = state.get("event_count", 0)
        counted_before = self.interactions.event_count(user_id)
        positions = self.interactions.put(user_id, entries.keys(), weights, event_count)
        if self.model is not None:
            for position in positions[~self._known_items()[positions]].tolist():
                self.new_item_users[self.interactions.item_id(position)].add(user_id)
        if self.settings.check_pairs and event_count > counted_before:
            # only a record with new events made new pairs (a hide or a showing did not)
            self._note_first_pairs(user_id, entries, state.get("last_event_at", 0.0))

    def _note_first_pairs(
        self, user_id: str, entries: dict[str, list[float]], last_event_at: float
    ) -> None:
        """Remember the pairs the user's latest event made: items of theirs with one event,
        at that event's second (a basket's items share it)."""
        self.arrivals += 1
        second = int(last_event_at)
        for item_id, entry in entries.items():
            if entry[COUNT] == 1 and entry[LAST_AT] >= second and entry[WEIGHT] > 0:
                self.first_pairs[user_id, item_id] = self.arrivals
        excess = len(self.first_pairs) - self.settings.check_pairs
        if excess > 0:
            for pair in list(itertools.islice(self.first_pairs, excess)):
                del self.first_pairs[pair]

    def caught_up(self) -> None:
        """The changelog is read to its end: a resumed model may have been fitted on any of it."""
        self.arrivals_at_fit = self.arrivals

    def held_out(self) -> model_check.HeldOut | None:
        """The pairs to check a candidate on: remembered ones the serving model has not seen,
        or None when there is no serving model or too few users to judge."""
        if self.model is None or not self.settings.check_pairs:
            return None
        pairs = (
            pair for pair, arrival in self.first_pairs.items() if arrival > self.arrivals_at_fit
        )
        held = model_check.held_out(pairs, self._row_or_none)
        if len(held.users) < self.settings.check_min_users:
            log.info(
                "candidate not checked: %d users with held-out pairs, fewer than %d",
                len(held.users),
                self.settings.check_min_users,
            )
            return None
        return held

    def _row_or_none(self, user_id: str) -> dict[str, float] | None:
        return self.interactions.row(user_id) if user_id in self.interactions else None

    def _known_items(self) -> np.ndarray:
        """Item position -> whether the current model knows the item (extended lazily)."""
        assert self.model is not None
        count = self.interactions.item_count
        if len(self._known) < count:
            known = self.model.item_positions
            grown = np.fromiter(
                (self.interactions.item_id(p) in known for p in range(len(self._known), count)),
                dtype=bool,
                count=count - len(self._known),
            )
            self._known = np.concatenate([self._known, grown])
        return self._known

    def _set_model(self, model: ranker.FactorModel) -> None:
        self.model = model
        self._known = np.zeros(0, dtype=bool)

    def fit_due(self, requested: bool) -> str | None:
        """Why a full fit should start now, or None (:meth:`RetrainPolicy.fit_reason`)."""
        if not self.interactions.pairs:
            return None
        return self.policy.fit_reason(
            has_model=self.model is not None,
            requested=requested,
            seconds_since_fit=time.monotonic() - self.last_fit_at,
            events=self.events,
            events_at_fit=self.events_at_fit,
        )

    async def fit_and_publish(self, reason: str, snapshot: Snapshot | None = None) -> None:
        """Fit on the rows of ``snapshot`` (default: as of now) and publish; records applied
        meanwhile are kept for the next fit (growth) and the next new-item fold."""
        if snapshot is None:
            snapshot = self.interactions.snapshot()
        events = snapshot.events
        arrivals = self.arrivals
        held = self.held_out()
        params = als_params(self.settings)
        log.info("full fit (%s): %d users, %d events", reason, snapshot.users, events)
        started = time.monotonic()

        loop = asyncio.get_running_loop()
        version = await self.models.next_version()
        await self._report_fit(version, 0, params.iterations)

        def progress(iteration: int, seconds: float) -> None:
            """Report from the fit's thread and wait for it: reports land in order, and the
            last one before the model is published."""
            log.info("fit iteration %d/%d (%.2f s)", iteration + 1, params.iterations, seconds)
            asyncio.run_coroutine_threadsafe(
                self._report_fit(version, iteration + 1, params.iterations), loop
            ).result()

        item_ids, matrix = await asyncio.to_thread(snapshot.to_csr)
        row_users = snapshot.row_user_ids()
        del snapshot  # buffers replaced by a compaction meanwhile can go now
        if held is not None:
            matrix = await asyncio.to_thread(
                model_check.without_pairs, matrix, row_users, item_ids, held.by_user()
            )
        log.info("fit matrix: %d x %d, %d nonzeros", *matrix.shape, matrix.nnz)
        model, user_factors = await self.fit_matrix(item_ids, matrix, params, version, progress)
        seconds = time.monotonic() - started
        metrics = {"users": matrix.shape[0], "items": len(model.item_ids), "events": events}
        del matrix
        if held is not None:
            assert self.model is not None
            verdict = await asyncio.to_thread(
                model_check.compare, model, self.model, held, self.settings.check_margin
            )
            await self.models.record_check(version, verdict.as_dict())
            if not verdict.accepted:
                # Counted as a fit for the schedule, so the same growth does not refit at once.
                self.events_at_fit = events
                self.last_fit_at = time.monotonic()
                log.warning(
                    "candidate %s refused, still serving %s: %s",
                    version,
                    self.model.version,
                    verdict.describe(),
                )
                return
            log.info("candidate %s checked: %s", version, verdict.describe())
            metrics["check"] = verdict.as_dict()
        user_ids = row_users if self.settings.user_neighbours else None
        users = (
            None
            if user_ids is None
            else await asyncio.to_thread(encode_user_factors, user_ids, user_factors)
        )
        del user_factors
        await self._publish(model, {**metrics, "fit_seconds": round(seconds, 3)}, users)
        self.events_at_fit = events
        self.last_fit_at = time.monotonic()
        self.arrivals_at_fit = arrivals
        self.on_trial = True
        # Records applied during the fit were matched against the previous model.
        await self._match_new_items()

    async def _match_new_items(self) -> None:
        """Find every row's items the model does not know, for the next new-item fold (from
        here on apply() matches each record against the model)."""
        self.new_item_users.clear()
        unknown = ~self._known_items()
        if unknown.any():
            found = await asyncio.to_thread(self.interactions.snapshot().users_with, unknown)
            for item_id, users in found.items():
                self.new_item_users[item_id].update(users)

    async def follow_published(self) -> None:
        """Continue from a model made current by somebody else (a rollback). It counts as a fit
        for the schedule, so the model rolled away from is not refitted at once; which pairs it
        saw is unknown, so the next check holds out only what comes from now on."""
        await self.resume_published()
        self.events_at_fit = self.events
        self.last_fit_at = time.monotonic()
        self.on_trial = False  # a model rolled back to is not rolled back again automatically
        self.caught_up()
        if self.model is not None:
            await self._match_new_items()

    async def fit_matrix(
        self,
        item_ids: tuple[str, ...],
        matrix: csr_matrix,
        params: ranker.AlsParams,
        version: str,
        progress: Callable[[int, float], None],
    ) -> tuple[ranker.FactorModel, np.ndarray]:
        """The full fit itself (:func:`ranker.fit_matrix`), in a thread; the one step a test's
        trainer replaces to publish a deliberately bad candidate."""
        return await asyncio.to_thread(
            ranker.fit_matrix, item_ids, matrix, params, version, time.time(), progress
        )

    async def roll_back_if_worse(self) -> bool:
        """Roll the newest model back when the workers' live HR@10 of its lists is below the
        previous model's by more than ``rollback_margin`` of it, both over at least
        ``rollback_min_trials`` trials; whether it did."""
        minimum = self.settings.rollback_min_trials
        if not minimum:
            return False
        kept = await self.models.kept_snapshots()
        if len(kept) < 2 or kept[0] != self.snapshot:
            return False
        newest = await self.models.live_counts(kept[0])
        previous = await self.models.live_counts(kept[1])
        if not model_check.live_regression(
            newest, previous, minimum, self.settings.rollback_margin
        ):
            return False
        (trials, hits), (before_trials, before_hits) = newest, previous
        rate, before = hits / trials, before_hits / before_trials
        version = await self.models.roll_back()
        if version is None:
            return False
        why = {
            "rolled_back": kept[0],
            "to": version,
            "live_hit_rate": round(rate, 4),
            "trials": trials,
            "previous_live_hit_rate": round(before, 4),
            "previous_trials": before_trials,
        }
        await self.models.record_rollback(why)
        log.warning(
            "rolled %s back to %s: live HR@10 %.4f over %d trials against %.4f over %d",
            kept[0],
            version,
            rate,
            trials,
            before,
            before_trials,
        )
        await self.follow_published()
        return True

    async def _report_fit(self, version: str, iteration: int, iterations: int) -> None:
        try:
            await self.models.report_fit(version, iteration, iterations)
        except (RedisError, OSError) as error:
            log.warning("fit progress not reported, Redis unavailable: %s", error)

    async def fold_new_items(self) -> None:
        """Publish the model extended by items first seen since the last fit."""
        assert self.model is not None
        users = set().union(*self.new_item_users.values())
        items = list(self.new_item_users)
        self.new_item_users.clear()
        rows = [self.interactions.row(u) for u in users if u in self.interactions]
        item_ids, factors = await asyncio.to_thread(ranker.solve_new_items, self.model, rows)
        if item_ids:
            # "events" stays the fit's, so a trainer resuming this model counts growth from it.
            metrics = {"new_items": len(item_ids), "events": self.events_at_fit}
            await self._publish_delta(item_ids, factors, metrics)
            log.info("folded in %d new items: %s", len(items), ", ".join(items[:5]))

    async def _publish(
        self, model: ranker.FactorModel, metrics: dict[str, Any], users: bytes | None = None
    ) -> None:
        """Publish a fitted model as the new snapshot, with its fit's encoded user factors."""
        blob = await asyncio.to_thread(encode_model, model, metrics)
        if not await self.models.hold_lease(self.owner, LEASE_TTL_MS):
            raise LeaseLost(f"lease lost before publishing {model.version}")
        await self.models.publish(model.version, blob, users)
        self._set_model(model)
        self.snapshot, self.deltas = model.version, 0
        log.info("published model %s: %s", model.version, metrics)

    async def _publish_delta(
        self, item_ids: tuple[str, ...], factors: np.ndarray, metrics: dict[str, Any]
    ) -> None:
        """Publish these items as the next delta on the snapshot and serve the model plus them
        (the same :func:`ranker.with_items` every worker applies)."""
        assert self.model is not None and self.snapshot is not None
        delta = self.deltas + 1
        version = await self.models.next_delta_version(self.snapshot, delta)
        trained_at = time.time()
        blob = await asyncio.to_thread(
            encode_delta, version, trained_at, item_ids, factors, metrics
        )
        model = await asyncio.to_thread(
            ranker.with_items, self.model, item_ids, factors, version, trained_at
        )
        if not await self.models.hold_lease(self.owner, LEASE_TTL_MS):
            raise LeaseLost(f"lease lost before publishing {version}")
        if not await self.models.publish_delta(self.snapshot, delta, version, blob):
            # The snapshot is gone (a replay deleted the models): publish this one whole.
            log.warning("%s is no longer the snapshot; publishing a new one", self.snapshot)
            snapshot = dataclasses.replace(model, version=await self.models.next_version())
            await self._publish(snapshot, metrics)
            return
        self._set_model(model)
        self.deltas = delta
        log.info("published model %s: %s", version, metrics)

    async def resume_published(self) -> None:
        """Continue from the current published model (snapshot and deltas), so a restart does
        not refit."""
        published = await self.models.sync(None, asyncio.to_thread)
        if published is not None:
            self._set_model(published.model)
            self.snapshot, self.deltas = published.snapshot, published.deltas
            self.events_at_fit = published.meta["metrics"].get("events", 0)
            log.info("continuing from published model %s", published.version)

    async def step(self) -> None:
        """Start a fit or fold in new items when due; called every tick once caught up.

        A fit runs as a task of its own (:attr:`fitting`) so the caller keeps tailing the
        changelog; nothing else starts until it is done, and its failure is raised here.
        """
        if self.fitting is not None:
            if not self.fitting.done():
                return
            fitting, self.fitting = self.fitting, None
            fitting.result()
        if self.snapshot is not None:
            published = await self.models.snapshot_version()
            if published is not None and published != self.snapshot:
                log.warning("%s was made current (a rollback?): continuing from it", published)
                await self.follow_published()
                return
        if self.on_trial and await self.roll_back_if_worse():
            return
        reason = self.fit_due(await self.models.take_retrain_request())
        if reason is not None:
            # The snapshot is taken now: the task starts only after records applied meanwhile.
            fit = self.fit_and_publish(reason, self.interactions.snapshot())
            self.fitting = asyncio.create_task(fit, name="trainer-fit")
        elif self.model is not None and self.policy.fold_due(
            time.monotonic() - self.last_fold_at, bool(self.new_item_users)
        ):
            self.last_fold_at = time.monotonic()
            await self.fold_new_items()

    async def stop(self) -> None:
        """Cancel a fit under way (its thread finishes on its own; nothing is published)."""
        fitting, self.fitting = self.fitting, None
        if fitting is not None:
            fitting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fitting


class LeaseLost(RuntimeError):
    """Another trainer holds the lease now: this one must stop publishing."""


async def _tail_changelog(trainer: Trainer, consumer: AIOKafkaConsumer) -> None:
    topic = changelog_topic(trainer.settings)
    parent = os.getppid()
    while True:  # the worker creates the changelog topic when its table starts
        if topic in await consumer.topics():
            break
        if os.getppid() != parent:
            raise SystemExit("the worker that started this trainer is gone")
        await asyncio.sleep(1)
    assigned = [TopicPartition(topic, p) for p in range(trainer.settings.partitions)]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    ends = await consumer.end_offsets(assigned)
    caught_up = False
    next_step = 0.0
    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=5000)
        for records in batches.values():
            for record in records:
                trainer.apply(record.key, record.value)
        if not caught_up:
            positions = [await consumer.position(tp) for tp in assigned]
            caught_up = all(pos >= ends[tp] for pos, tp in zip(positions, assigned, strict=True))
            if caught_up:
                trainer.caught_up()
                log.info(
                    "changelog read: %d users, %d pairs, %d events",
                    trainer.interactions.users,
                    trainer.interactions.pairs,
                    trainer.events,
                )
        if time.monotonic() >= next_step:
            next_step = time.monotonic() + TICK_SECONDS
            if os.getppid() != parent:
                raise SystemExit("the worker that started this trainer is gone")
            if not await trainer.models.hold_lease(trainer.owner, LEASE_TTL_MS):
                raise LeaseLost("lease lost")
            if caught_up:
                await trainer.step()


async def run(settings: Settings, trainer_class: type[Trainer] = Trainer) -> None:
    # SIGTERM (the worker stopping) unwinds through the finally below, releasing the lease.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    stores = Stores.connect(settings)
    models = stores.models
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    parent = os.getppid()
    while not await models.hold_lease(owner, LEASE_TTL_MS):
        if os.getppid() != parent:
            return
        await asyncio.sleep(LEASE_TTL_MS / 3000)
    log.info("trainer %s active", owner)
    trainer = trainer_class(settings, models, owner)
    await trainer.resume_published()
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await _tail_changelog(trainer, consumer)
    finally:
        await trainer.stop()
        await consumer.stop()
        await models.release_lease(owner)
        await stores.close()


async def supervise() -> None:
    """Run a trainer beside this worker, restarting it when it exits; the Redis lease makes
    one per deployment active. The trainer reads the same ``RECSYS_`` environment."""
    while True:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.trainer",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            async for line in process.stdout:
                log.info("trainer: %s", line.decode(errors="replace").rstrip())
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
        log.warning("trainer exited with %s; restarting in %.0f s", code, RESTART_DELAY)
        await asyncio.sleep(RESTART_DELAY)


def main(trainer_class: type[Trainer] = Trainer) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        asyncio.run(run(Settings.from_env(), trainer_class))
    except LeaseLost as error:
        log.warning("%s; stopping", error)
    except asyncio.CancelledError:
        log.info("trainer stopped")


if __name__ == "__main__":
    main()
