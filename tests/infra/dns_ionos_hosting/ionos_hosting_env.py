"""Shared constants and the virtual clock of the IONOS hosting DNS tests."""

from __future__ import annotations

ZONE = "spaced.fun"
OTHER_ZONE = "other-example.de"


class VirtualClock:
    """A monotonic clock that only moves when the code under test sleeps: retries run instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
