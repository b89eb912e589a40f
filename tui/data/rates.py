"""Event rates from successive ``/stats`` snapshots.

The clock is the server's own ``uptime`` (seconds since it started, monotonic), so a rate is
``Δreceived / Δuptime`` whatever the TUI's timer did, and a restart (uptime going back) starts
the meter afresh instead of showing a negative rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tui.data.models import Stats


@dataclass(frozen=True, slots=True)
class Rates:
    received: float  # events/s offered (received, duplicates included)
    unique: float  # events/s stored
    history: tuple[float, ...]  # received/s, oldest first


class RateMeter:
    def __init__(self, history: int = 60) -> None:
        self._last: Stats | None = None
        self._history: deque[float] = deque(maxlen=history)
        self._rates: Rates | None = None

    @property
    def rates(self) -> Rates | None:
        """The latest rates; ``None`` until two snapshots of one server run were seen."""
        return self._rates

    def observe(self, stats: Stats) -> Rates | None:
        last, self._last = self._last, stats
        if last is None or stats.uptime < last.uptime or stats.received < last.received:
            self._history.clear()
            self._rates = None
            return None
        elapsed = stats.uptime - last.uptime
        if elapsed <= 0:
            return self._rates
        received = (stats.received - last.received) / elapsed
        unique = (stats.unique - last.unique) / elapsed
        self._history.append(received)
        self._rates = Rates(received, unique, tuple(self._history))
        return self._rates
