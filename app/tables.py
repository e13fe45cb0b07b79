"""Changelog-backed tables, partitioned exactly like ``user-actions``."""

from __future__ import annotations

from collections.abc import Iterator

import faust
from faust.types import TableT

from app.models import UserState
from app.settings import Settings
from app.topics import topic_config

USER_STATE = "user-state"
MIB = 2**20


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """The RocksDB options of a table partition: memory bounded by ``table_memory_mib``."""
    budget = settings.table_memory_mib * MIB
    return {
        "block_cache_size": budget // 2,
        "write_buffer_size": budget // 4,
        "max_write_buffer_number": 2,
    }


def user_state_table(app: faust.App, settings: Settings) -> TableT:
    """Each user's accumulated interactions, keyed by the user id's UTF-8 bytes."""
    return app.Table(
        USER_STATE,
        key_type=bytes,
        value_type=UserState,
        partitions=settings.partitions,
        extra_topic_configs=topic_config(settings),
        options=rocksdb_options(settings),
        help="Each user's accumulated interactions, keyed by the user id's UTF-8 bytes.",
    )


def changelog_topic(settings: Settings, table: str = USER_STATE) -> str:
    """Faust's name for a table's changelog topic (the trainer tails ``user-state``'s)."""
    return f"{settings.app_id}-{table}-changelog"


class TableStates:
    """Read-only access to the users this worker holds, by string id."""

    def __init__(self, table: TableT) -> None:
        self.table = table

    def get(self, user_id: str) -> UserState | None:
        return self.table.get(user_id.encode())

    def items(self) -> Iterator[tuple[str, UserState]]:
        for key, state in self.table.items():
            yield key.decode(), state
