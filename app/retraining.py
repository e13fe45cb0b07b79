"""When to refit and fold new items in, and with which ALS parameters: the trainer
(``app.trainer``) and the streaming evaluation's simulation both decide by these functions, the
trainer on wall time and the simulation on stream time."""

from __future__ import annotations

from dataclasses import dataclass

from app import ranker
from app.settings import Settings


@dataclass(frozen=True)
class RetrainPolicy:
    """``interval``: refit once this many seconds passed since the last fit (0: never on a
    clock). ``growth``: refit once the events since the last fit reach this multiple of the
    events it saw (0: never for growth). ``new_item_interval``: fold the items first seen since
    the last fit or fold into the model at most this often (0: never)."""

    interval: float = 3600.0
    growth: float = 1.0
    new_item_interval: float = 2.0

    @classmethod
    def of(cls, settings: Settings) -> RetrainPolicy:
        return cls(settings.retrain_interval, settings.retrain_growth, settings.new_item_interval)

    def fit_reason(
        self,
        *,
        has_model: bool,
        requested: bool,
        seconds_since_fit: float,
        events: int,
        events_at_fit: int,
    ) -> str | None:
        """Why a full fit should start now, or None. Called only when there is data to fit."""
        if not has_model:
            return "no model yet"
        if requested:
            return "requested"
        if self.interval > 0 and seconds_since_fit >= self.interval:
            return "schedule"
        if self.growth > 0 and events - events_at_fit >= self.growth * max(events_at_fit, 1):
            return "data grew"
        return None

    def fold_due(self, seconds_since_fold: float, new_items: bool) -> bool:
        """Whether to fold the new items into the current model now."""
        return (
            new_items
            and self.new_item_interval > 0
            and seconds_since_fold >= (self.new_item_interval)
        )


def als_params(settings: Settings) -> ranker.AlsParams:
    """The ALS parameters the product fits with under ``settings``."""
    return ranker.AlsParams(
        factors=settings.als_factors,
        regularization=settings.als_regularization,
        alpha=settings.als_alpha,
        iterations=settings.als_iterations,
        threads=settings.als_threads,
    )
