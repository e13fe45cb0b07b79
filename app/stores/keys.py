"""Every Redis key the product uses, in one place, namespaced under the configured prefix.

Keys are built only from validated ids. The layout:

=================================  ==========================================================
``{p}:rec:{user_id}``              a user's cached list (JSON, ``app.stores.lists``)
``{p}:popular:{half_life}``        sorted set of items' log2 decayed weight for one half-life
``{p}:popular:newest-event-at``    the newest event time popularity counts (its stream time)
``{p}:model:{version}``            a published snapshot blob (``app.stores.model``)
``{p}:model:{version}:deltas``     list of the delta blobs published on that snapshot, in order
``{p}:model:{version}:users``      the user factors of the fit that made that snapshot
``{p}:model:{name}``               the model pointers: current, snapshot, versions, sequence,
                                   fitting, retrain-requested, trainer-lease
``{p}:items``                      hash of item id -> catalogue record (``app.stores.catalogue``)
``{p}:items:unavailable``          set of ids that must not be recommended
``{p}:items:version``              counter bumped by every catalogue write
``{p}:experiment:{name}``          hash of ``{arm}:{counter}`` -> count (``app.stores.experiments``)
``{p}:epoch``                      token whose loss tells workers Redis lost its data
``{p}:replay``                     the marker a replay leaves for the workers (``app.replay``)
=================================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

KEPT_MODEL_KEYS = ("sequence",)
"""Model keys a replay keeps: versions keep counting up across replays."""


def glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    def user_list(self, user_id: str) -> str:
        return f"{self.prefix}:rec:{user_id}"

    def popular(self, half_life: float) -> str:
        return f"{self.prefix}:popular:{half_life:g}"

    @property
    def newest_event_at(self) -> str:
        return f"{self.prefix}:popular:newest-event-at"

    def model(self, name: str) -> str:
        """A published version's blob, or one of the model pointers named in the module docs."""
        return f"{self.prefix}:model:{name}"

    def model_deltas(self, snapshot: str) -> str:
        """The deltas published on snapshot version ``snapshot``, oldest first."""
        return f"{self.prefix}:model:{snapshot}:deltas"

    def model_users(self, snapshot: str) -> str:
        """The user factors of the fit that made snapshot version ``snapshot``."""
        return f"{self.prefix}:model:{snapshot}:users"

    @property
    def items(self) -> str:
        return f"{self.prefix}:items"

    @property
    def unavailable_items(self) -> str:
        return f"{self.prefix}:items:unavailable"

    @property
    def catalogue_version(self) -> str:
        return f"{self.prefix}:items:version"

    def experiment(self, name: str) -> str:
        """One experiment's counts per arm."""
        return f"{self.prefix}:experiment:{name}"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def replay_marker(self) -> str:
        return f"{self.prefix}:replay"

    @property
    def every_key(self) -> str:
        """SCAN pattern of every key of this prefix."""
        return f"{glob_escape(self.prefix)}:*"

    @property
    def every_list(self) -> str:
        """SCAN pattern of every cached list."""
        return f"{glob_escape(self.prefix)}:rec:*"

    @property
    def derived_patterns(self) -> list[str]:
        """SCAN patterns of every key derived from ``user-actions`` (what a replay rebuilds)."""
        literal = glob_escape(self.prefix)
        return [
            self.every_list,
            f"{literal}:popular:*",
            f"{literal}:model:*",
            f"{literal}:experiment:*",  # its live trials are counted again as the log replays
        ]

    def kept_by_replay(self, key: str) -> bool:
        """Whether a derived key survives a replay."""
        return key in {self.model(name) for name in KEPT_MODEL_KEYS}
