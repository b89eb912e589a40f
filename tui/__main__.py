"""``aggregator-tui`` / ``python -m tui``: the dashboard for a running aggregator.

Its options come from the same settings machinery as the server's and the simulator's: defaults
← environment ← flags, one-line errors. This module is the only one of the dashboard that reads
the environment.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence

from aggregator.settings import SettingError, http_url_rule, load, setting
from tui.app.app import DashboardApp

ENV_PREFIX = "AGGREGATOR_TUI_"
DESCRIPTION = "A live dashboard for a running aggregator."


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    url: str = setting(
        "http://127.0.0.1:8080",
        "the aggregator's base URL",
        env="AGGREGATOR_URL",
        rule=http_url_rule,
    )
    interval: float = setting(1.0, "seconds between refreshes", minimum=0.05, metavar="SECONDS")
    tail_size: int = setting(100, "how many of the newest events the tail keeps", minimum=1)
    token: str = setting("", "bearer token for the server's AGGREGATOR_READ_TOKEN", secret=True)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Options:
    """The dashboard's options; raises ``SettingError`` with one line for a bad value."""
    return load(
        Options,
        sys.argv[1:] if argv is None else argv,
        environ,
        prog="aggregator-tui",
        description=DESCRIPTION,
        prefix=ENV_PREFIX,
        epilog="Every flag can also be set as an environment variable AGGREGATOR_TUI_<NAME> "
        "(the URL as AGGREGATOR_URL).",
    )


def main(argv: Sequence[str] | None = None) -> None:
    try:
        options = parse_args(argv, os.environ)
    except SettingError as exc:
        sys.stderr.write(f"aggregator-tui: error: {exc}\n")
        raise SystemExit(2) from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.stderr.write(
            "aggregator-tui: error: the dashboard needs a terminal; run it in one (in a "
            "container: docker compose run --rm tui, without -T)\n"
        )
        raise SystemExit(2)
    DashboardApp(
        options.url, interval=options.interval, tail_size=options.tail_size, token=options.token
    ).run()


if __name__ == "__main__":
    main()
