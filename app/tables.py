"""Changelog-backed tables, partitioned exactly like ``user-actions``."""

from __future__ import annotations

from collections.abc import Iterator

from app.faust_app import app, settings
from app.models import UserState

user_state = app.Table(
    "user-state",
    key_type=bytes,
    value_type=UserState,
    partitions=settings.partitions,
    help="Each user's accumulated interactions, keyed by the user id's UTF-8 bytes.",
)


class TableStates:
    """Read-only access to the users this worker holds, by string id."""

    def get(self, user_id: str) -> UserState | None:
        return user_state.get(user_id.encode())

    def items(self) -> Iterator[tuple[str, UserState]]:
        for key, state in user_state.items():
            yield key.decode(), state
