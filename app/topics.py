"""Kafka topics, created explicitly with the partition count the tables are built on."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.types import TopicT

from app.faust_app import app, settings


def _raw_topic(name: str, **declared: Any) -> TopicT:
    """A topic of raw key and value bytes with the tables' partition count, created by Faust."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,
        **declared,
    )


user_actions = _raw_topic(
    settings.events_topic, config={"retention.ms": str(settings.events_retention_ms)}
)
"""Raw user actions keyed by user id (UTF-8 bytes); JSON values are validated by the agent."""

dead_letters = _raw_topic(settings.dead_letter_topic)
"""Messages from ``user-actions`` that could not be processed, with the reason in a header."""

items = _raw_topic(settings.items_topic, compacting=True)
"""The item catalogue, keyed by item id: the latest record of each item is kept for good."""

ALL_TOPICS = (user_actions, dead_letters, items)

_partitioner = DefaultPartitioner()


def partition_for(user_key: bytes) -> int:
    """The partition of ``user-actions``, and of the user's table state, that holds a user.

    The Java client's and aiokafka's default (murmur2 of the key bytes), computed here from the
    configured partition count, so it needs no producer metadata.
    """
    partitions = list(range(settings.partitions))
    return _partitioner(user_key, partitions, partitions)
