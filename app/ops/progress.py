"""Progress of long commands on stderr: messages, and bars while stderr is a terminal.

Everything goes to stderr, so stdout holds only a command's result (a JSON report). The bars
are tqdm's; by default they are drawn only on a terminal, so a CI log or a redirected stderr
gets the plain messages alone.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """Says messages and makes bars; ``Progress.silent()`` does neither."""

    def __init__(
        self, stream: TextIO | None = None, bars: bool | None = None, messages: bool = True
    ) -> None:
        """``bars``: True always, False never, None (the default) only on a terminal."""
        self.stream = stream
        self.bars = bars
        self.messages = messages

    @classmethod
    def silent(cls) -> Progress:
        return cls(bars=False, messages=False)

    def __call__(self, message: str) -> None:
        """A message on its own line, printed above any bar being drawn."""
        if self.messages:
            tqdm.write(message, file=self.stream or sys.stderr)

    def bar(
        self,
        description: str,
        total: int | None = None,
        unit: str = "it",
        iterable: Iterable[T] | None = None,
    ) -> tqdm:
        """A bar to ``update`` and close (or use as a context manager), or that wraps an
        ``iterable`` and advances as it is iterated. Without a total it counts and shows the
        rate."""
        return tqdm(
            iterable,
            total=total,
            desc=description,
            unit=unit,
            file=self.stream or sys.stderr,
            disable=None if self.bars is None else not self.bars,
            dynamic_ncols=True,
            mininterval=0.2,
        )
