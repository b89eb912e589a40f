"""``python -m fuzz.decoders``: coverage-guided fuzzing (atheris, libFuzzer) of each decoder in
``fuzz/targets.py``.

For each target of ``fuzz.targets`` it writes the checked-in seeds and regressions into a
working corpus, runs ``python -m fuzz.harness`` for ``--seconds`` or ``--runs`` inputs with a
fixed ``--seed``, and prints what it tried and found. Exits 1 when any input broke the decoder
contract (the inputs are kept in ``--artifacts``; ``--replay FILE`` shows one again), or when the
harness stopped on its own (a hang over ``--timeout``, memory over libFuzzer's limit).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fuzz import inputs, targets
from fuzz.contract import Violation, check

DONE = re.compile(r"Done (\d+) runs in (\d+) second")
STATS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")


@dataclass(frozen=True)
class Run:
    """What one target's fuzzing did."""

    target: str
    inputs: int
    seconds: float
    coverage: int
    corpus: int
    violations: list[str]
    exit_code: int
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.violations

    def line(self) -> str:
        found = len(self.violations) + (self.exit_code != 0)
        return (
            f"{self.target}: {self.inputs:,} inputs in {self.seconds:.0f} s, "
            f"{found} crashes (contract violations), coverage {self.coverage} edges, "
            f"corpus {self.corpus}"
        )


def fuzz_target(
    name: str,
    *,
    seconds: int | None,
    runs: int | None,
    seed: int,
    artifacts: Path,
    max_len: int = 8192,
    timeout: int = 10,
) -> Run:
    target = targets.target(name)
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
        corpus = Path(work)
        inputs.write_corpus(target, corpus)
        flags = [
            f"-seed={seed}",
            f"-max_len={max_len}",
            f"-timeout={timeout}",
            f"-artifact_prefix={artifacts}/{name}-",
            "-print_final_stats=1",
        ]
        if runs is not None:
            flags.append(f"-runs={runs}")
        if seconds is not None:
            flags.append(f"-max_total_time={seconds}")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "fuzz.harness", name, str(artifacts), *flags, str(corpus)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
    log = done.stderr
    tried = DONE.search(log)
    stats = STATS.findall(log)
    return Run(
        target=name,
        inputs=int(tried.group(1)) if tried else 0,
        seconds=elapsed,
        coverage=int(stats[-1][0]) if stats else 0,
        corpus=int(stats[-1][2]) if stats else 0,
        violations=[line for line in log.splitlines() if line.startswith("violation: ")],
        exit_code=done.returncode,
        log_tail="\n".join(log.splitlines()[-30:]),
    )


def replay(path: Path, name: str) -> int:
    """Decode one saved input again and say what it does."""
    target = targets.target(name)
    body, headers = inputs.decode(target, path.read_bytes())
    print(f"headers: {dict(headers)}\nbody ({len(body)} bytes): {body[:2000]!r}")
    try:
        outcome = check(
            target.decode, body, headers, targets.LIMITS, allows_empty=target.allows_empty
        )
    except Violation as violation:
        print(f"VIOLATION: {violation}")
        raise violation.__cause__ or violation from None
    print(f"fine: {outcome!r}"[:2000])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz.decoders", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--target", action="append", choices=targets.names(), help="default: every target"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=int, help="fuzz each target this long")
    budget.add_argument("--runs", type=int, help="fuzz each target this many inputs")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's seed (default 1)")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path("fuzz-artifacts"),
        help="where inputs that broke the contract are kept (default ./fuzz-artifacts)",
    )
    parser.add_argument("--max-len", type=int, default=8192, help="longest input, in bytes")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--replay", type=Path, metavar="FILE", help="decode one saved input")
    args = parser.parse_args(argv)
    names = args.target or targets.names()
    if args.replay:
        return replay(args.replay, names[0] if args.target else args.replay.name.split("-")[0])
    if args.seconds is None and args.runs is None:
        args.seconds = 60
    ok = True
    for name in names:
        run = fuzz_target(
            name,
            seconds=args.seconds,
            runs=args.runs,
            seed=args.seed,
            artifacts=args.artifacts,
            max_len=args.max_len,
            timeout=args.timeout,
        )
        print(run.line(), flush=True)
        for violation in run.violations:
            print(f"  {violation}")
        if run.exit_code != 0:
            print(f"  the harness stopped (exit {run.exit_code}):\n{run.log_tail}")
        ok = ok and run.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
