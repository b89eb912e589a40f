"""``python -m simulator.benchscale`` (``make bench-scale``): the store at scale, in one run.

For each size (0, 1M and 10M stored events by default) the store is topped up to that size with
``simulator/prefill.py`` (the store's own write path, no HTTP), then a real server is started on
it (time to "listening on": start-up), put under the load of ``make bench`` (batch 100, uuid4,
50 clients, 20% re-sends, verified against ``/stats``) while a separate probe process reads
``/events`` (a random stored topic from a random cursor, limit 100) and ``/stats``, each 20 times
a second, and stopped; then the file size per stored event is taken.

``--baseline DIR`` runs every step also with the checkout in DIR (an older commit: its server,
its store code, this prefill), alternating with this one, so before and after come from one run.
The markdown table goes to stdout, the rows to ``--json``, and the plot to ``--plot``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from simulator.bench import ROOT, _drive, _options, machine
from simulator.benchplot import plot
from simulator.procs import running
from simulator.report import percentile

SIZES = (0, 1_000_000, 10_000_000)
OPENED = re.compile(r"opened the store in ([\d.]+) s")
PREFILL = Path(__file__).resolve().with_name("prefill.py")


@dataclass(frozen=True, slots=True)
class ScaleRow:
    build: str
    stored: int  # events stored when the run began
    prefill_seconds: float  # to top the store up to ``stored``
    prefill_rate: float  # events/s of that top-up
    startup_seconds: float  # process start to "listening on"
    open_seconds: float  # of it, opening the store (its log line)
    offered: float  # events/s
    committed: float  # unique events/s
    p50_ms: float
    p99_ms: float
    events_p50_ms: float
    events_p99_ms: float
    stats_p50_ms: float
    stats_p99_ms: float
    bytes_per_event: float
    cpu_us: float  # server CPU (all threads) per unique event committed, during the load
    note: str


def stored_events(database: Path) -> int:
    """Events stored now, read from the file (no server running)."""
    if not database.exists():
        return 0
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        count: int = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    return count


def top_up(root: Path, data: Path, target: int, seed: int) -> tuple[int, float]:
    """Prefill with ``root``'s store code up to ``target`` events; (events added, seconds)."""
    missing = target - stored_events(data / "aggregator.sqlite3")
    if missing <= 0:
        return 0, 0.0
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(PREFILL), str(data), "--events", str(missing), "--seed", str(seed)],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return missing, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User and system CPU so far of a process and its children (the read process), all their
    threads (``/proc/PID/stat``)."""
    total = 0.0
    for each in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _wait_line(lines: list[str], text: str, timeout: float = 10.0) -> None:
    """Until a line of the child's log (read by its thread) holds ``text``; the load waits for
    the read process, or the CPU of its start would count as the load's."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server never logged {text!r}")
        time.sleep(0.02)  # sleep-ok: polls a real subprocess's log with a deadline


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found = []
    for task in tasks.iterdir() if tasks.exists() else ():
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def file_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.iterdir() if p.name.startswith("aggregator.sqlite3"))


def measure(build: str, root: Path, data: Path, target: int, seed: int, duration: float,
            clients: int) -> ScaleRow:  # fmt: skip
    added, prefill_seconds = top_up(root, data, target, seed)
    stored = stored_events(data / "aggregator.sqlite3")
    args = ["--port", "0", "--data-dir", str(data), "--synchronous", "full"]
    started = time.perf_counter()
    with running("aggregator", args, root) as child:
        startup = time.perf_counter() - started
        if (root / "aggregator" / "reads.py").exists():  # a build with a read process
            _wait_line(child.lines, "reads are answered by the read process")
        probe = subprocess.Popen(
            [sys.executable, "-m", "simulator.readprobe", child.url, str(duration)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        opts = _options(child.url, 100, "uuid4", int(duration * 120_000), duration, clients)
        cpu = cpu_seconds(child.proc.pid)
        tally, elapsed, unique, verdict = trio.run(_drive, opts, True, seed)
        cpu = cpu_seconds(child.proc.pid) - cpu
        reads = json.loads(probe.communicate(timeout=duration + 60)[0])
        opened = next((OPENED.search(line) for line in child.lines if OPENED.search(line)), None)
    after = stored_events(data / "aggregator.sqlite3")

    def ms(values: list[float], p: int) -> float:
        return percentile(values, p) * 1000 if values else float("nan")

    return ScaleRow(
        build, stored, prefill_seconds, added / prefill_seconds if added else 0.0, startup,
        float(opened.group(1)) if opened else float("nan"),
        tally.events / elapsed, unique / elapsed, ms(tally.latencies, 50), ms(tally.latencies, 99),
        ms(reads["events"], 50), ms(reads["events"], 99), ms(reads["stats"], 50),
        ms(reads["stats"], 99), file_bytes(data) / max(after, 1), cpu / max(unique, 1) * 1e6,
        verdict,
    )  # fmt: skip


def _fmt(value: float, digits: int = 0) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"  # NaN: nothing measured


def markdown(rows: list[ScaleRow], duration: float, clients: int) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {machine()}; {clients} clients, batch "
        f"100, uuid4, 20% re-sends, {duration:g} s per run, synchronous FULL.",
        "",
        "| build | events stored | prefill s (events/s) | start-up s (store open) "
        "| events/s offered "
        "| unique/s | publish p50 / p99 ms | /events p50 / p99 ms | /stats p50 / p99 ms "
        "| bytes/event | server CPU µs/event | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        prefill = f"{r.prefill_seconds:,.0f} ({r.prefill_rate:,.0f})" if r.prefill_rate else "–"
        lines.append(
            f"| {r.build} | {r.stored:,} | {prefill} | {r.startup_seconds:.2f} "
            f"({_fmt(r.open_seconds, 3)}) | {_fmt(r.offered)} "
            f"| {_fmt(r.committed)} | {_fmt(r.p50_ms, 1)} / {_fmt(r.p99_ms, 1)} "
            f"| {_fmt(r.events_p50_ms, 1)} / {_fmt(r.events_p99_ms, 1)} "
            f"| {_fmt(r.stats_p50_ms, 1)} / {_fmt(r.stats_p99_ms, 1)} "
            f"| {_fmt(r.bytes_per_event)} | {_fmt(r.cpu_us)} | {r.note} |"
        )
    lines.append("")
    for build in dict.fromkeys(r.build for r in rows):
        mine = [r for r in rows if r.build == build]
        empty, largest = mine[0], mine[-1]
        if largest.stored > empty.stored and empty.committed:
            lines.append(
                f"- {build}: unique/s at {largest.stored:,} stored ÷ at {empty.stored:,}: "
                f"{largest.committed / empty.committed:.2f}× (target ≥ 0.7×)"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[ScaleRow]:
    builds = [("after", ROOT)] if args.baseline else [("this build", ROOT)]
    if args.baseline:
        builds.insert(0, ("before", args.baseline.resolve()))
    rows: list[ScaleRow] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work) as work:
        for stage, size in enumerate(args.sizes):
            for name, root in builds:
                data = Path(work) / name.replace(" ", "-")
                rows.append(measure(name, root, data, size, 100 + stage, args.duration,
                                    args.clients))  # fmt: skip
                sys.stderr.write(f"{name} at {size:,}: {rows[-1]}\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.benchscale", description=__doc__)
    add = parser.add_argument
    add("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES),
        help="stored events per stage (default 0,1000000,10000000)")  # fmt: skip
    add("--duration", type=float, default=15.0, help="seconds of load per run (default 15)")
    add("--clients", type=int, default=50, help="parallel clients (default 50)")
    add("--baseline", type=Path, default=None,
        help="a checkout of an older commit, measured alternately with this one")  # fmt: skip
    add("--work", type=Path, default=None,
        help="where the stores go (default: the system's temporary directory)")  # fmt: skip
    add("--json", type=Path, default=Path(".bench/scale.json"), help="the rows, as JSON")
    add("--plot", type=Path, default=Path("docs/bench-scale.png"), help="the plot (PNG)")
    args = parser.parse_args(argv)
    rows = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        series.setdefault(r.build, []).append((r.stored, r.committed, r.p99_ms))
    plot(series, args.plot)
    sys.stdout.write(markdown(rows, args.duration, args.clients) + "\n")


if __name__ == "__main__":
    main()
