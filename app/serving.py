"""The serving policy: which list a user sees. Every caller uses these functions: the worker's
refresher, its Redis-down path, ``GET /recommend``'s filters, ``GET /similar`` and the
streaming evaluation's simulation, so what is measured is what is served.

A user with few events (``content_max_events``) whom the catalogue can match gets items like
theirs blended with what is popular; otherwise a user the model knows gets the personal ALS
list; anybody else gets the popular items they have not seen. Unavailable items, items hidden
from everyone until later (``hidden_until``) and items the user hid are never listed; seen
items never either (a disliked or returned item is seen). Items shown to the user too often
without a reaction (``impression_limit``) come after every other candidate, so they leave a
full list and come back only when nothing else is left. An anonymous session's list
(``POST /recommend``) is the list of a user who did the same. Pure numerics: no Faust, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypedDict

import numpy as np

from app import ranker
from app.content import ContentIndex, blend
from app.models import ItemRecord
from app.popularity import Trending
from app.settings import Settings

POPULAR_DEPTH = 3
"""Popular candidates read per list, as a multiple of the list length: enough to fill a list
after the user's seen items and unavailable items are taken out."""


class ServedList(TypedDict):
    """A user's list as cached in Redis and served: best first, with where it came from."""

    items: list[tuple[str, float]]
    source: str  # "personal", "content" or "popular"
    model_version: str | None
    updated_at: float
    event_count: int  # how many of the user's events it reflects: 0 for somebody unknown


@dataclass(frozen=True)
class ServingRules:
    """The settings the policy depends on."""

    list_length: int = 100
    content_max_events: int = 3
    content_weight: float = 0.7
    popularity_half_life: float = 7 * 24 * 3600.0
    popularity_clock: str = "stream"

    @classmethod
    def of(cls, settings: Settings) -> ServingRules:
        return cls(
            list_length=settings.cache_size,
            content_max_events=settings.content_max_events,
            content_weight=settings.content_weight,
            popularity_half_life=settings.popularity_half_life,
            popularity_clock=settings.popularity_clock,
        )

    @property
    def popular_depth(self) -> int:
        """How many of the most popular items a list is chosen from."""
        return POPULAR_DEPTH * self.list_length


@dataclass(frozen=True)
class CatalogueSnapshot:
    """What serving knows of the catalogue at one version; never mutated, so threads share it."""

    content: ContentIndex | None = None
    unavailable: frozenset[str] = frozenset()
    hidden_until: Mapping[str, float] = field(default_factory=dict)
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def of(cls, records: Sequence[ItemRecord], version: int) -> CatalogueSnapshot:
        """Index a catalogue's records (CPU-bound: build it off the event loop)."""
        return cls(
            content=ContentIndex(records),
            unavailable=frozenset(r.item_id for r in records if not r.available),
            hidden_until={r.item_id: r.hidden_until for r in records if r.hidden_until},
            categories={record.item_id: record.categories for record in records},
            titles={record.item_id: record.title for record in records if record.title},
            version=version,
        )

    def withheld(self, now: float) -> frozenset[str]:
        """The items no list may show at ``now``: unavailable, or hidden until later."""
        if not self.hidden_until:
            return self.unavailable
        hidden = (item_id for item_id, until in self.hidden_until.items() if until > now)
        return self.unavailable.union(hidden)

    def visible(
        self,
        items: Iterable[tuple[str, float]],
        exclude: Collection[str] = (),
        category: str | None = None,
        now: float | None = None,
    ) -> list[tuple[str, float]]:
        """Listed items still fit to show at ``now`` (default: the clock): not withheld, not
        excluded, in the category if given."""
        withheld = self.withheld(time.time() if now is None else now)
        return [
            (item_id, score)
            for item_id, score in items
            if item_id not in withheld
            and item_id not in exclude
            and (category is None or category in self.categories.get(item_id, ()))
        ]


class UserHistory(NamedTuple):
    """What the policy reads of a user's state."""

    event_count: int
    weights: Mapping[str, float]  # item -> summed action weight
    hidden: frozenset[str] = frozenset()  # items the user hid: never in their list
    demoted: frozenset[str] = frozenset()  # items shown too often: after all other candidates


def demote(
    items: Sequence[tuple[str, float]], demoted: Collection[str], n: int
) -> list[tuple[str, float]]:
    """The first ``n`` of ``items`` once the demoted ones are moved after all the others
    (each part keeping its order)."""
    if not demoted:
        return list(items[:n])
    kept = [entry for entry in items if entry[0] not in demoted]
    return (kept + [entry for entry in items if entry[0] in demoted])[:n]


def popular_list(
    popular: Trending,
    seen: Iterable[str],
    catalogue: CatalogueSnapshot,
    rules: ServingRules,
    now: float,
    model_version: str | None,
    half_life: float | None = None,
    length: int | None = None,
) -> ServedList:
    """The ``length`` (default: the list length) most popular items the user has not seen,
    available, scored by their decayed weight at the time ``popular`` is read at; written at
    ``now``. Its ``event_count`` is 0: :func:`user_lists` stamps a user's own."""
    half_life = half_life or rules.popularity_half_life
    hidden = catalogue.withheld(now).union(seen)
    items = ranker.popular_excluding(popular.items, hidden, length or rules.list_length)
    return ServedList(
        items=[
            (item, ranker.decayed_value(score, popular.as_of, half_life)) for item, score in items
        ],
        source="popular",
        model_version=model_version,
        updated_at=now,
        event_count=0,
    )


def user_lists(
    model: ranker.FactorModel | None,
    users: Sequence[UserHistory],
    catalogue: CatalogueSnapshot,
    popular: Trending,
    rules: ServingRules,
    now: float | None = None,
    vectors: np.ndarray | None = None,
) -> list[ServedList]:
    """Each user's list, in order: content, personal or popular (see the module docs).

    ``popular`` is the top :attr:`ServingRules.popular_depth` items by popularity. Given
    ``vectors`` (a row per user: an experiment's arm without fold-in serves the vectors of the
    last full fit), personal lists rank by them instead of re-solving each user; a zero row (a
    user the fit did not know) gets no personal list.
    """
    now = time.time() if now is None else now
    rows = [user.weights for user in users]
    unavailable, content = catalogue.withheld(now), catalogue.content
    version = None if model is None else model.version
    most_left_out = max((len(user.hidden) + len(user.demoted) for user in users), default=0)
    personal = (
        [[]] * len(rows)
        if model is None
        else ranker.recommend(
            model, rows, rules.list_length + most_left_out, exclude=unavailable, vectors=vectors
        )
    )
    lists = []
    for user, ranked in zip(users, personal, strict=True):
        length = rules.list_length + len(user.demoted)  # candidates to demote within
        items = [entry for entry in ranked if entry[0] not in user.hidden][:length]
        left_out = unavailable | user.hidden
        similar = (
            content.recommend_for_profile(user.weights, length, exclude=left_out)
            if content is not None and user.event_count <= rules.content_max_events
            else []
        )
        seen = user.weights.keys() | user.hidden
        if similar:
            trending = popular_list(popular, seen, catalogue, rules, now, version, length=length)
            source = "content"
            items = blend(similar, trending["items"], rules.content_weight, length)
        elif items:
            source = "personal"
        else:
            source = "popular"
            items = popular_list(popular, seen, catalogue, rules, now, version, length=length)[
                "items"
            ]
        lists.append(
            ServedList(
                items=demote(items, user.demoted, rules.list_length),
                source=source,
                model_version=version,
                updated_at=now,
                event_count=user.event_count,
            )
        )
    return lists


def similar_items(
    model: ranker.FactorModel | None, catalogue: CatalogueSnapshot, item_id: str, n: int
) -> tuple[ranker.Scored, str] | None:
    """Items like one item and how they were found: by cosine of ALS factors ("factors"), or of
    catalogue content ("content") while the item has no factors yet; None when neither knows it.
    Unavailable items are left out."""
    if model is not None and item_id in model.item_positions:
        ranked = ranker.similar_items(model, item_id, n + len(catalogue.withheld(time.time())))
        return catalogue.visible(ranked)[:n], "factors"
    content = catalogue.content
    if content is not None and item_id in content.item_positions:
        return catalogue.visible(content.similar(item_id, n))[:n], "content"
    return None
