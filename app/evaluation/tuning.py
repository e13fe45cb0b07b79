"""ALS hyper-parameter search on a temporal split, for ``python -m app tune``.

The events are split twice by time (:func:`app.evaluation.offline.temporal_split`): the last
``F`` of them are the *test* period, and the last ``F`` of what comes before are the
*validation* period. Every trial is fitted on the events before validation and scored on it;
the search picks the trial with the best validation score, then fits the worker's current
settings and that trial on everything before the test period and scores both on it. The test
period takes no part in the choice, so its figures say what the change is worth on data the
search has not seen. The tuned settings are recommended only when they score at least as well
as the current ones there: a search never makes the deployment worse.

Pure numerics on lists of :class:`app.datasets.Event`; no Faust, Kafka, Redis or file I/O.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from app import ranker
from app.datasets import Event
from app.evaluation import offline
from app.ops.progress import Progress

TUNED_FIELDS = ("factors", "regularization", "alpha", "iterations")
"""The ALS parameters searched, each set by ``RECSYS_ALS_<FIELD>``."""


@dataclass(frozen=True)
class SearchSpace:
    """The values tried for each of :data:`TUNED_FIELDS`; a trial takes one of each."""

    factors: tuple[int, ...] = (16, 32, 64, 128)
    regularization: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
    alpha: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0, 40.0)
    iterations: tuple[int, ...] = (10, 15, 30)

    @property
    def size(self) -> int:
        return len(self.factors) * len(self.regularization) * len(self.alpha) * len(self.iterations)


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: at most ``trials`` fits, started within ``seconds``."""

    trials: int
    seconds: float

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"a search needs at least 1 trial, got {self.trials}")
        if self.seconds <= 0:
            raise ValueError(f"a search needs a positive time budget, got {self.seconds}")


@dataclass(frozen=True)
class Trial:
    """One configuration's scores on the validation period."""

    params: ranker.AlsParams
    scores: dict[str, object]  # offline.summarize: metric means and their 95% intervals
    seconds: float


@dataclass(frozen=True)
class Outcome:
    """A finished search: every trial (best first), and the current and best trials' test scores."""

    trials: list[Trial]
    metric: str
    current: ranker.AlsParams
    best: ranker.AlsParams
    current_test: dict[str, object]
    best_test: dict[str, object]
    validation: dict[str, object]  # offline.Task.describe of each period
    test: dict[str, object]

    @property
    def improves(self) -> bool:
        """Whether the best trial scores at least as well as the current settings on the test."""
        return self.best_test[self.metric] >= self.current_test[self.metric]

    @property
    def recommended(self) -> ranker.AlsParams:
        """The settings to run: the best trial's if it :attr:`improves`, else the current ones."""
        return self.best if self.improves else self.current


def candidates(
    current: ranker.AlsParams, space: SearchSpace, seed: int
) -> Iterator[ranker.AlsParams]:
    """The current settings first, then every other point of the space in a random order (each
    once), so that any budget compares the search against what runs today."""
    yield current
    grid = list(
        itertools.product(space.factors, space.regularization, space.alpha, space.iterations)
    )
    random.Random(seed).shuffle(grid)
    for factors, regularization, alpha, iterations in grid:
        point = replace(
            current,
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
        )
        if point != current:
            yield point


def search(
    task: offline.Task,
    points: Iterator[ranker.AlsParams],
    budget: Budget,
    metric: str,
    progress: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> list[Trial]:
    """Fit and score points on a task until the budget or the points run out; best first by
    ``metric`` (earlier trials first among equals, so the current settings win a tie)."""
    if metric not in offline.METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(offline.METRICS)}")
    deadline = clock() + budget.seconds
    trials: list[Trial] = []
    with progress.bar("trials", budget.trials, "trial") as bar:
        for params in itertools.islice(points, budget.trials):
            if trials and clock() >= deadline:
                progress(f"time budget of {budget.seconds:g} s spent after {len(trials)} trials")
                break
            started = clock()
            per_user, _ = offline.score_als(task, params)
            trial = Trial(params, offline.summarize(per_user, task.indices), clock() - started)
            trials.append(trial)
            bar.update()
            progress(
                f"[{len(trials)}] {describe(params)}: "
                + ", ".join(f"{m} {trial.scores[m]:.4f}" for m in offline.METRICS)
                + f" ({trial.seconds:.1f} s)"
            )
    order = sorted(range(len(trials)), key=lambda i: (-trials[i].scores[metric], i))
    return [trials[i] for i in order]


def tune(
    events: Sequence[Event],
    current: ranker.AlsParams,
    weight: offline.Weight,
    space: SearchSpace,
    budget: Budget,
    metric: str = "NDCG@10",
    test_fraction: float = 0.1,
    seed: int = 0,
    progress: Progress | None = None,
) -> Outcome:
    """Search the space on the validation period, then score the current settings and the best
    trial on the test period; see the module docs."""
    progress = progress or Progress.silent()
    test_task = offline.prepare(events, "temporal", test_fraction, weight)
    validation_task = offline.prepare(test_task.split.train, "temporal", test_fraction, weight)
    progress(
        f"validation: {len(validation_task.users)} users tested on "
        f"{validation_task.split.test_events} events; test: {len(test_task.users)} users on "
        f"{test_task.split.test_events} events; up to {min(budget.trials, space.size + 1)} trials"
    )
    trials = search(validation_task, candidates(current, space, seed), budget, metric, progress)
    best = trials[0].params
    progress(f"best on validation: {describe(best)}; scoring it and the current on the test")
    tested = {
        params: offline.summarize(offline.score_als(test_task, params)[0], test_task.indices)
        for params in dict.fromkeys((current, best))
    }
    return Outcome(
        trials=trials,
        metric=metric,
        current=current,
        best=best,
        current_test=tested[current],
        best_test=tested[best],
        validation=validation_task.describe(),
        test=test_task.describe(),
    )


def describe(params: ranker.AlsParams) -> str:
    return ", ".join(f"{name} {getattr(params, name):g}" for name in TUNED_FIELDS)


def env_lines(params: ranker.AlsParams) -> list[str]:
    """The ``RECSYS_ALS_*`` lines that make a worker fit with ``params``."""
    return [f"RECSYS_ALS_{name.upper()}={getattr(params, name):g}" for name in TUNED_FIELDS]


def trial_table(outcome: Outcome) -> str:
    """A Markdown table of the trials, best first, with the current settings marked."""
    lines = [
        "| rank | factors | regularization | alpha | iterations | "
        + " | ".join(offline.METRICS)
        + " | seconds | |",
        "|---:|---:|---:|---:|---:|" + "---:|" * len(offline.METRICS) + "---:|---|",
    ]
    for rank, trial in enumerate(outcome.trials, 1):
        params = trial.params
        marks = [
            name
            for name, p in (("current", outcome.current), ("best", outcome.best))
            if p == params
        ]
        lines.append(
            f"| {rank} | {params.factors} | {params.regularization:g} | {params.alpha:g} | "
            f"{params.iterations} | "
            + " | ".join(f"{trial.scores[m]:.4f}" for m in offline.METRICS)
            + f" | {trial.seconds:.1f} | {', '.join(marks)} |"
        )
    return "\n".join(lines)


def verdict(outcome: Outcome) -> list[str]:
    """What the test period says of the best trial against the current settings."""
    lines = []
    for name, params, scores in (
        ("current", outcome.current, outcome.current_test),
        ("best", outcome.best, outcome.best_test),
    ):
        lines.append(
            f"test, {name} ({describe(params)}): "
            + ", ".join(
                f"{m} {scores[m]:.4f} ({scores['ci95'][m][0]:.4f}-{scores['ci95'][m][1]:.4f})"
                for m in offline.METRICS
            )
        )
    if outcome.best == outcome.current:
        lines.append("the current settings are the best found: nothing to change")
    elif outcome.improves:
        lines.append(f"the best trial scores at least as well on the test {outcome.metric}: use it")
    else:
        lines.append(
            f"the best trial scores worse than the current settings on the test "
            f"{outcome.metric}: keep the current ones"
        )
    return lines
