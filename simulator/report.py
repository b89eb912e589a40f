"""The run's report: latency percentiles, the live progress bar, the final table, the JSON form."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator.runner import RunResult, Tally
from simulator.verify import Check

PROGRESS_INTERVAL = 0.25


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def summary(result: RunResult, seed: int, checks: Sequence[Check] | None) -> dict[str, Any]:
    """The report as plain data (the ``--json`` output, and the table's source)."""
    tally = result.tally
    elapsed = result.elapsed or 1e-9
    lat = sorted(tally.latencies)
    report: dict[str, Any] = {
        "seed": seed,
        "elapsed_s": round(result.elapsed, 3),
        "events_sent": tally.events,
        "distinct_keys": result.distinct_keys,
        "resends": tally.events - result.distinct_keys,
        "resend_kinds": dict(tally.resends),
        "batches": tally.batches,
        "requests": tally.requests,
        "retries": tally.retries,
        "errors": dict(tally.failures),
        "abandoned_batches": tally.abandoned_batches,
        "ambiguous_events": tally.ambiguous_events,
        "acked_stored": tally.stored,
        "acked_duplicates": tally.duplicates,
        "events_per_s": round(tally.events / elapsed, 1),
        "requests_per_s": round(tally.requests / elapsed, 1),
        "stored_per_s": round(tally.stored / elapsed, 1),
        "latency_ms": {
            name: round(percentile(lat, q) * 1000, 3)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
    }
    if checks is not None:
        report["verification"] = [
            {"check": c.name, "ok": c.ok, "expected": c.expected, "actual": c.actual}
            for c in checks
        ]
        report["ok"] = all(c.ok for c in checks)
    return report


def _by_kind(counts: dict[str, int]) -> str:
    """``{"same request": 12, "other client": 3}`` as ``12 same request, 3 other client``."""
    return ", ".join(f"{n:,} {kind}" for kind, n in counts.items()) or "none"


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="simulator run", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    lat = " / ".join(f"{v:.1f}" for v in report["latency_ms"].values())
    rows = [
        ("seed", report["seed"]),
        ("elapsed", f"{report['elapsed_s']:.2f} s"),
        ("events sent (incl. re-sends)", f"{report['events_sent']:,}"),
        ("distinct keys", f"{report['distinct_keys']:,}"),
        ("re-sends", f"{report['resends']:,}  ({_by_kind(report['resend_kinds'])})"),
        ("requests / retries", f"{report['requests']:,} / {report['retries']:,}"),
        ("errors", _by_kind(report["errors"])),
        ("abandoned batches", report["abandoned_batches"]),
        ("ambiguous events (may have been stored)", f"{report['ambiguous_events']:,}"),
        ("events/s, req/s", f"{report['events_per_s']:,.0f}, {report['requests_per_s']:,.0f}"),
        ("stored (from acks)", f"{report['acked_stored']:,}  ({report['stored_per_s']:,.0f}/s)"),
        ("latency p50/p90/p99/max", f"{lat} ms"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    if "verification" in report:
        checks = Table(title="verification against /stats")
        for column in ("check", "expected", "actual", "ok"):
            checks.add_column(column)
        for c in report["verification"]:
            mark = "[green]ok[/]" if c["ok"] else "[bold red]FAILED[/]"
            checks.add_row(c["check"], c["expected"], c["actual"], mark)
        console.print(checks)
        verdict = "[green]all checks hold[/]" if report["ok"] else "[bold red]checks FAILED[/]"
        console.print(verdict)


async def serve_progress(tally: Tally, total: int, duration: float, console: Console) -> None:
    """A live progress bar with events/s until cancelled (by count, or by time when unbounded)."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    by_time = not total
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(
            "events" if not by_time else "seconds", total=total or duration, rate=""
        )
        started = trio.current_time()
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            elapsed = trio.current_time() - started
            rate = f"{tally.events / elapsed:,.0f} events/s" if elapsed else ""
            progress.update(task, completed=elapsed if by_time else tally.events, rate=rate)
