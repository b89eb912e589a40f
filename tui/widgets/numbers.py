"""How numbers, durations and times read on the dashboard."""

from __future__ import annotations


def count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def rate(value: float) -> str:
    return f"{value:,.1f}/s"


def percent(value: float) -> str:
    return f"{value:.1%}"


def duration(seconds: float) -> str:
    whole = int(seconds)
    days, whole = divmod(whole, 86400)
    hours, whole = divmod(whole, 3600)
    minutes, secs = divmod(whole, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def clock_time(stamp: str) -> str:
    """``2026-11-21T10:00:01.123456Z`` → ``10:00:01.123``; anything else unchanged."""
    _, sep, rest = stamp.partition("T")
    if not sep:
        return stamp
    rest = rest.rstrip("Z")
    whole, dot, fraction = rest.partition(".")
    return f"{whole}.{fraction[:3].ljust(3, '0')}" if dot else whole
