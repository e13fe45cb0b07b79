"""Users of like taste (``GET /users/{id}/similar``): the user factors the trainer published
with the snapshot a worker serves, read from Redis the first time they are asked for, searched
with the user's vector solved now from their table state (:func:`app.ranker.similar_users`).

A worker that is never asked never reads them: they are as large as 4 bytes a factor a user.
Users who joined after the fit can ask, but are found by others only after the next full fit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from app import ranker
from app.refresher import ListRefresher
from app.settings import Settings
from app.stores.model import ModelStore, decode_user_factors


class NoNeighbours(Exception):
    """Nothing to compare a user with; the message says why."""


class FittedUsers:
    """The user factors published with a snapshot, decoded (and indexed, from
    ``ann_min_items`` users on) on a thread the first time they are asked for, once per
    snapshot: the similar-users search and an experiment's arm without fold-in share them."""

    def __init__(self, settings: Settings, models: ModelStore) -> None:
        self.settings = settings
        self.models = models
        self._held: ranker.UserFactors | None = None
        self._loading = asyncio.Lock()

    async def of(self, snapshot: str) -> ranker.UserFactors | None:
        """The user factors published with ``snapshot``, or None when it has none."""
        async with self._loading:
            if self._held is None or self._held.snapshot != snapshot:
                blob = await self.models.load_user_factors(snapshot)
                if blob is None:
                    return None
                self._held = await asyncio.to_thread(self._searchable, snapshot, blob)
            return self._held

    def _searchable(self, snapshot: str, blob: bytes) -> ranker.UserFactors:
        user_ids, factors = decode_user_factors(blob)
        return ranker.user_factors(snapshot, user_ids, factors, self.settings.ann_min_items)


class UserNeighbours:
    """Users of like taste, searched among the served snapshot's fitted users."""

    def __init__(self, settings: Settings, fitted: FittedUsers, refresher: ListRefresher) -> None:
        self.settings = settings
        self.fitted = fitted
        self.refresher = refresher

    async def similar(
        self, user_id: str, row: Mapping[str, float], n: int
    ) -> tuple[ranker.Scored, str]:
        """The ``n`` users closest to this one (whose interactions are ``row``) and the model
        version that solved them; NoNeighbours when there is nothing to compare with."""
        if not self.settings.user_neighbours:
            raise NoNeighbours("similar users are off (RECSYS_USER_NEIGHBOURS=false)")
        published, model = self.refresher.published, self.refresher.model
        if published is None or model is None:
            raise NoNeighbours("no model has been fitted yet")
        users = await self.fitted.of(published.snapshot)
        if users is None:
            raise NoNeighbours(
                f"model {published.snapshot} was published without user factors; "
                "the next full fit publishes them"
            )
        found = await asyncio.to_thread(ranker.similar_users, model, users, user_id, row, n)
        return found, model.version
