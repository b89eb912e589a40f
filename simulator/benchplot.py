"""The scale benchmark's plot: ingest rate and publish p99 against events stored, per build."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

Point = tuple[int, float, float]  # events stored, unique events/s, publish p99 ms


def plot(series: Mapping[str, Sequence[Point]], path: Path) -> None:
    """Write a PNG: unique events/s (left) and publish p99 ms (right) over events stored, one
    line per build."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write a file
    from matplotlib import pyplot

    figure, (rate, p99) = pyplot.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for build, points in series.items():
        stored = [p[0] / 1e6 for p in points]
        rate.plot(stored, [p[1] for p in points], marker="o", label=build)
        p99.plot(stored, [p[2] for p in points], marker="o", label=build)
    rate.set(title="ingest", xlabel="events stored (millions)", ylabel="unique events/s")
    p99.set(title="publish latency", xlabel="events stored (millions)", ylabel="p99 ms")
    for axes in (rate, p99):
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("make bench-scale: batch 100, 50 clients, uuid4, synchronous FULL")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
