"""Exponential backoff for the refresh timer, on an injected clock."""

from __future__ import annotations


class Backoff:
    """After a failed refresh the next one waits ``initial``, then twice as long each time, up
    to ``maximum``; a success resets it. Times are the caller's clock (e.g. ``time.monotonic``).
    """

    def __init__(self, initial: float, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.factor = factor
        self.failures = 0
        self._not_before = 0.0

    def ready(self, now: float) -> bool:
        return now >= self._not_before

    def retry_in(self, now: float) -> float:
        return max(0.0, self._not_before - now)

    def failed(self, now: float) -> float:
        """Record a failure at ``now``; returns the delay before the next attempt."""
        delay = min(self.maximum, self.initial * self.factor**self.failures)
        self.failures += 1
        self._not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self._not_before = 0.0
