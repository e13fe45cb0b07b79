"""Kafka topics, created explicitly with the partition count the tables are built on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TopicT

from app.settings import Settings

_partitioner = DefaultPartitioner()

ERASE_HEADER = "x-recsys-erase"
"""On a message keyed by a user in ``user-actions`` (``DELETE /users/{id}``): erase the user.
In the user's partition, after their earlier events, so a replay erases them again."""

HIDE_HEADER = "x-recsys-hide"
"""On a message keyed by a user in ``user-actions`` (``POST /users/{id}/hidden``): ``1`` hides
the value's ``item_ids`` from the user's lists, ``0`` shows them again. In the user's
partition, so it survives a restart in the table and a replay in the log."""


RESTORE_HEADER = "x-recsys-restore"
"""On a message keyed by a user in ``user-actions`` (``python -m app restore``): the value is
the user's whole state (``app.state_codec`` encoding), which replaces what the table holds."""


def topic_config(settings: Settings) -> dict[str, str]:
    """The broker configuration of every topic the product creates, changelogs included: a
    record is acknowledged once ``topic_min_insync_replicas`` replicas have it."""
    return {"min.insync.replicas": str(settings.topic_min_insync_replicas)}


@lru_cache(maxsize=65_536)
def partition_for(user_key: bytes, partitions: int) -> int:
    """The partition of ``user-actions``, and of the user's table state, that holds a user.

    The Java client's and aiokafka's default (murmur2 of the key bytes), computed from the
    configured partition count, so it needs no producer metadata. Cached: the agent checks
    every event, a user's events come together, and aiokafka's murmur2 is pure Python (about
    2% of a worker's loop on a backlog, py-spy).
    """
    every = list(range(partitions))
    return _partitioner(user_key, every, every)


@dataclass(frozen=True)
class Topics:
    """The topics of one app: raw key and value bytes, the tables' partition count."""

    user_actions: TopicT
    """Raw user actions keyed by user id (UTF-8 bytes); JSON values are validated by the agent."""
    dead_letters: TopicT
    """Messages from ``user-actions`` that could not be processed, with the reason in a header."""
    items: TopicT
    """The item catalogue, keyed by item id: the latest record of each item is kept for good."""

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> Topics:
        def raw(name: str, config: dict[str, str] | None = None, **declared: Any) -> TopicT:
            return app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.partitions,
                internal=True,
                config={**topic_config(settings), **(config or {})},
                **declared,
            )

        return cls(
            user_actions=raw(
                settings.events_topic, {"retention.ms": str(settings.events_retention_ms)}
            ),
            dead_letters=raw(settings.dead_letter_topic),
            items=raw(settings.items_topic, compacting=True),
        )

    @property
    def all(self) -> tuple[TopicT, ...]:
        return (self.user_actions, self.dead_letters, self.items)
