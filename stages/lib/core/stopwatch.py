"""Wall time per phase of a stage, for the benchmarks and for anyone asking where time goes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """`with watch("phase"): ...` adds the block's wall seconds to `watch.seconds["phase"]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + elapsed, 4)
