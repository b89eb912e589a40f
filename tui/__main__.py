"""``aggregator-tui`` / ``python -m tui``: the dashboard for a running aggregator."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from tui.app.app import DashboardApp

DEFAULT_URL = "http://127.0.0.1:8080"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0; got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aggregator-tui", description="A live dashboard for a running aggregator."
    )
    parser.add_argument(
        "--url",
        default=environ.get("AGGREGATOR_URL", DEFAULT_URL),
        help=f"the aggregator's base URL (env AGGREGATOR_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--interval",
        type=_positive,
        default=_positive(environ.get("AGGREGATOR_TUI_INTERVAL", "1")),
        help="seconds between refreshes (env AGGREGATOR_TUI_INTERVAL; default 1)",
    )
    parser.add_argument(
        "--tail-size",
        type=int,
        default=100,
        help="how many of the newest events the tail keeps (default 100)",
    )
    parser.add_argument(
        "--token",
        default=environ.get("AGGREGATOR_TUI_TOKEN", ""),
        help="bearer token for the server's AGGREGATOR_READ_TOKEN "
        "(env AGGREGATOR_TUI_TOKEN; default none)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, os.environ)
    DashboardApp(args.url, interval=args.interval, tail_size=args.tail_size, token=args.token).run()


if __name__ == "__main__":
    main()
