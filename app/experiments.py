"""Experiments: users split into arms by a stable hash of their id, each arm served by its own
variant of the serving policy, and each arm's live results with confidence intervals.

An arm is ``name:share`` with options: ``fold_in=off`` serves the user vectors of the last full
fit instead of re-solving the user on each event (the batch recommender a shop would run
without this product), so the two arms measure what online fold-in is worth. The assignment
hashes the experiment's name with the user id: the same user is always in the same arm, and a
new experiment name deals the users afresh. Pure: no Faust, no I/O.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from scipy.special import gammaincinv

CONFIDENCE = 0.95
Z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)
_SPAN = float(2**64)
ID_SEPARATOR = "."
COUNTERS = ("served", "answered", "trials", "hits")
"""What is counted per arm: lists served (``GET /recommend``), events answering one of them
(carrying its ``recommendation_id``), live HR@10 trials and their hits."""


@dataclass(frozen=True)
class Arm:
    name: str
    share: float
    """Fraction of the users, the shares of an experiment summing to 1."""
    fold_in: bool = True


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: tuple[Arm, ...]

    def arm_of(self, user_id: str) -> Arm:
        """The user's arm: the point the hash of (experiment, user) falls on among the shares."""
        if len(self.arms) == 1:
            return self.arms[0]
        digest = hashlib.blake2b(f"{self.name}:{user_id}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "little") / _SPAN
        reached = 0.0
        for arm in self.arms:
            reached += arm.share
            if point < reached:
                return arm
        return self.arms[-1]

    def arm_named(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)

    @property
    def batch_arms(self) -> bool:
        """Whether some arm is served without fold-in (and so needs the fitted user vectors)."""
        return any(not arm.fold_in for arm in self.arms)

    def answered_arm(self, recommendation_id: str) -> Arm | None:
        """The arm of the list a ``recommendation_id`` names; None for an id of no arm here."""
        name, separator, _ = recommendation_id.rpartition(ID_SEPARATOR)
        return self.arm_named(name) if separator else None


DEFAULT_ARM = Arm("default", 1.0)


def parse_arms(text: str, name: str) -> Experiment:
    """``"fold-in:50,batch:50:fold_in=off"``: the arms, shares in any unit (normalised); empty
    text is one arm, ``default``. ValueError names what is wrong."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        return Experiment(name, (DEFAULT_ARM,))
    arms = []
    for part in parts:
        arm_name, *fields = part.split(":")
        if not arm_name or ID_SEPARATOR in arm_name or not arm_name.isprintable():
            raise ValueError(f"arm {part!r}: a name without {ID_SEPARATOR!r} comes first")
        if not fields:
            raise ValueError(f"arm {part!r}: expected name:share")
        try:
            share = float(fields[0])
        except ValueError:
            raise ValueError(f"arm {arm_name!r}: share {fields[0]!r} is not a number") from None
        if not share > 0 or math.isinf(share):
            raise ValueError(f"arm {arm_name!r}: share must be positive, got {fields[0]}")
        fold_in = True
        for option in fields[1:]:
            key, _, value = option.partition("=")
            if key != "fold_in" or value not in ("on", "off"):
                raise ValueError(f"arm {arm_name!r}: unknown option {option!r} (fold_in=on|off)")
            fold_in = value == "on"
        arms.append(Arm(arm_name, share, fold_in))
    if len({arm.name for arm in arms}) != len(arms):
        raise ValueError("arm names must differ")
    total = sum(arm.share for arm in arms)
    return Experiment(name, tuple(Arm(a.name, a.share / total, a.fold_in) for a in arms))


def recommendation_id(arm: Arm) -> str:
    """A new id for one served list, naming its arm (``arm.<16 hex digits>``)."""
    return f"{arm.name}{ID_SEPARATOR}{secrets.token_hex(8)}"


def proportion_interval(successes: int, trials: int) -> tuple[float, float] | None:
    """Wilson's 95% interval of a proportion; None with no trials."""
    if trials == 0:
        return None
    rate, z2 = successes / trials, Z * Z
    centre = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z / (1 + z2 / trials) * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_interval(events: int, exposure: int) -> tuple[float, float] | None:
    """The exact (Garwood) 95% interval of a Poisson rate of ``events`` per unit of
    ``exposure``: click-through counts answering events per list, and one list may be answered
    several times, so it is a rate, not a proportion. None with no exposure."""
    if exposure == 0:
        return None
    tail = (1 - CONFIDENCE) / 2
    low = float(gammaincinv(events, tail)) if events else 0.0
    return low / exposure, float(gammaincinv(events + 1, 1 - tail)) / exposure


def difference_interval(
    hits: int, trials: int, base_hits: int, base_trials: int
) -> tuple[float, float, float] | None:
    """A proportion minus a base proportion, with its 95% normal (Wald) interval; None when
    either has no trials."""
    if trials == 0 or base_trials == 0:
        return None
    rate, base = hits / trials, base_hits / base_trials
    spread = Z * math.sqrt(rate * (1 - rate) / trials + base * (1 - base) / base_trials)
    return rate - base, rate - base - spread, rate - base + spread


def report(experiment: Experiment, counts: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Each arm's counts, live HR@10 and click-through with 95% intervals, and its HR@10 minus
    the first arm's (the control)."""
    arms = []
    control = counts.get(experiment.arms[0].name, {})
    for arm in experiment.arms:
        mine = {counter: int(counts.get(arm.name, {}).get(counter, 0)) for counter in COUNTERS}
        served, answered, trials, hits = (mine[counter] for counter in COUNTERS)
        entry: dict[str, Any] = {
            "arm": arm.name,
            "share": arm.share,
            "fold_in": arm.fold_in,
            **mine,
            "hit_rate_at_10": _estimate(hits, trials, proportion_interval(hits, trials)),
            "click_through": _estimate(answered, served, rate_interval(answered, served)),
        }
        if arm is not experiment.arms[0]:
            difference = difference_interval(
                hits, trials, int(control.get("hits", 0)), int(control.get("trials", 0))
            )
            entry["hit_rate_vs_control"] = (
                None
                if difference is None
                else {"value": difference[0], "low": difference[1], "high": difference[2]}
            )
        arms.append(entry)
    return {"experiment": experiment.name, "confidence": CONFIDENCE, "arms": arms}


def _estimate(
    count: int, exposure: int, interval: tuple[float, float] | None
) -> dict[str, float] | None:
    if interval is None:
        return None
    return {"value": count / exposure, "low": interval[0], "high": interval[1]}
