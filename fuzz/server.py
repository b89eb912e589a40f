"""``python -m fuzz.server``: a mutation campaign against a real ``python -m aggregator``.

One client, one keep-alive connection, requests in a sequence fixed by ``--seed``: valid
publishes to every target's route (``/publish``, ``/fuzz/_bulk``, ``/v1/logs``,
``/loki/api/v1/push``: fresh events, re-sends, the seeds), the same bodies damaged
(``fuzz.mutate``: flipped and inserted bytes, truncation, splices, deep nesting, gzip broken or
wrapped around broken JSON, chunked uploads) or sent with another content type or encoding, and
GETs with hostile query strings on the read routes, wrong methods and unknown paths.

Each answer is judged by the decoder in this process and the door's answer to its outcome
(``fuzz/campaign.py``, ``fuzz/answers.py``). Every
``--check-every`` requests and at the end, ``/stats`` must equal what the accepted publishes
predict; at the end ``/health`` is 200, no internal error was counted, the log holds no
traceback, and SIGTERM stops the server with exit 0.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from fuzz import targets
from fuzz.campaign import Campaign, final_checks
from simulator.procs import Child

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Report:
    requests: int
    seconds: float
    sent: dict[str, int]
    posts: dict[str, int]
    statuses: dict[int, int]
    stats: tuple[int, int, int, int]
    failures: list[str]
    exit_code: int | None

    def lines(self) -> list[str]:
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.statuses.items()))
        sent = ", ".join(f"{k} {v:,}" for k, v in sorted(self.sent.items()))
        posts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.posts.items()))
        received, unique, duplicates, topics = self.stats
        return [
            f"{self.requests:,} requests in {self.seconds:.0f} s, "
            f"{len(self.failures)} failures, server exit {self.exit_code}",
            f"  sent: {sent}",
            f"  posted to: {posts}",
            f"  statuses: {statuses}",
            f"  /stats as predicted: received {received:,} = unique_processed {unique:,} + "
            f"duplicate_dropped {duplicates:,}, {topics} topics",
            *(f"  FAILURE {f}" for f in self.failures[:50]),
        ]


def run(
    *, seed: int, requests: int | None, seconds: float | None, artifacts: Path, check_every: int
) -> Report:
    rng = random.Random(seed)
    artifacts.mkdir(parents=True, exist_ok=True)
    limits = targets.LIMITS
    with tempfile.TemporaryDirectory(prefix="fuzz-server-") as data:
        args = ["--port", "0", "--data-dir", data, "--synchronous", "normal"]
        args += ["--max-body-bytes", str(limits.max_body_bytes)]
        args += ["--max-batch-events", str(limits.max_batch_events)]
        args += ["--max-payload-bytes", str(limits.max_payload_bytes)]
        server = Child("aggregator", args, ROOT)
        started = time.monotonic()
        deadline = started + seconds if seconds is not None else None
        try:
            url = server.wait_ready()
            with httpx.Client(base_url=url, timeout=30) as client:
                campaign = Campaign(client, rng, artifacts)
                while (requests is None or campaign.tally.requests < requests) and (
                    deadline is None or time.monotonic() < deadline
                ):
                    campaign.step()
                    if campaign.tally.requests % check_every == 0:
                        campaign.check_stats()
                    if server.proc.poll() is not None:
                        campaign.fail(f"the server exited ({server.proc.returncode})")
                        break
                elapsed = time.monotonic() - started
                final_checks(campaign, server)
        finally:
            server.stop()
    tally = campaign.tally
    if server.proc.returncode != 0:
        tally.failures.append(f"SIGTERM: exit {server.proc.returncode}, not 0")
    received, unique, duplicates, topics = tally.stats()
    return Report(
        requests=tally.requests,
        seconds=elapsed,
        sent=dict(tally.sent),
        posts=dict(tally.posts),
        statuses=dict(tally.statuses),
        stats=(received, unique, duplicates, len(topics)),
        failures=tally.failures,
        exit_code=server.proc.returncode,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz.server", description=__doc__.split("\n\n")[0]
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="run this long")
    budget.add_argument("--requests", type=int, help="send this many requests")
    parser.add_argument("--seed", type=int, default=1, help="the campaign's seed (default 1)")
    parser.add_argument(
        "--artifacts", type=Path, default=Path("fuzz-artifacts"), help="bodies of failures"
    )
    parser.add_argument("--check-every", type=int, default=200, help="requests between /stats")
    args = parser.parse_args(argv)
    if args.seconds is None and args.requests is None:
        args.seconds = 60.0
    report = run(
        seed=args.seed,
        requests=args.requests,
        seconds=args.seconds,
        artifacts=args.artifacts,
        check_every=args.check_every,
    )
    print("\n".join(report.lines()))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
