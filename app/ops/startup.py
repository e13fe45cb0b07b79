"""Start-up objects taken out of the cyclic garbage collector's walks, once the worker is up."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


class StartupObjects:
    """Takes every object alive once the worker is up (Faust, aiokafka, the state just loaded)
    out of the cyclic garbage collector's walks, once. A full collection over these ~130,000
    objects stopped the event loop for 55-70 ms, the longest wait a read had; afterwards it
    walks only newer objects. Frozen objects are still freed by reference counting."""

    def __init__(self, young_threshold: int) -> None:
        self.frozen = False
        self.young_threshold = young_threshold

    def freeze(self) -> None:
        """Freeze once; also space the young-generation passes ``young_threshold`` allocations
        apart (at 700, collections took 6% of a loaded worker's loop and full ones 15-20 ms)."""
        if self.frozen:
            return
        gc.set_threshold(self.young_threshold, *gc.get_threshold()[1:])
        gc.freeze()
        self.frozen = True
        # gc.get_freeze_count() walks the frozen list: fine once, too slow for every tick.
        log.info("froze %d start-up objects out of the cyclic collector", gc.get_freeze_count())
