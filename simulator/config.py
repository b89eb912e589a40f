"""The simulator's one Options: defaults ← preset ← environment (``SIMULATOR_*``) ← flags.

This module is the only place that reads the environment. A preset names a seed scenario; the
environment and flags still override any of its values.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.settings import SettingError, flag_name, http_url_rule, load, setting
from aggregator.settings import parser as settings_parser

ENV_PREFIX = "SIMULATOR_"
ID_STYLES = ("uuid4", "uuid7", "seq")
FORMATS = ("json", "ndjson")
HTTP_CLIENTS = ("httpx", "raw")
PRESET_NAMES = ("uts", "uas", "k6")
DESCRIPTION = "At-least-once publisher for the aggregator: duplicated load, then a check of /stats."


OptionsError = SettingError  # the simulator's name for it


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    url: str = setting("http://127.0.0.1:8080", "the aggregator's base URL", rule=http_url_rule)
    events: int = setting(
        10_000,
        "events to send, distinct and re-sent together; 0: no count, use --duration",
        minimum=0,
    )
    duration: float = setting(
        0.0, "stop taking new batches after this many seconds; 0: none", minimum=0
    )
    dup_ratio: float = setting(
        0.2, "share of sends that re-send an earlier event (0 ≤ r < 1)", minimum=0, metavar="RATIO"
    )
    topics: int = setting(5, "number of topics the events spread over", minimum=1)
    batch: int = setting(100, "events per publish request (1 sends a bare event object)", minimum=1)
    concurrency: int = setting(8, "parallel clients, each with its own connection", minimum=1)
    rate: float = setting(
        0.0,
        "cap on events/s offered, all clients together; 0: no cap",
        minimum=0,
        metavar="EVENTS_PER_S",
    )
    id_style: str = setting(
        "uuid4",
        "event_id style: random uuid4, time-ordered uuid7, or seq numbers",
        choices=ID_STYLES,
    )
    payload_bytes: int = setting(64, "approximate size of each payload's JSON text", minimum=16)
    format: str = setting("json", "request body format", choices=FORMATS)
    gzip: bool = setting(False, "gzip request bodies (Content-Encoding: gzip)")
    seed: int = setting(-1, "seed: same seed and options ⇒ same events; -1: a random seed")
    http: str = setting(
        "httpx",
        "HTTP client: httpx, or raw (a lean HTTP/1.1 client for load)",
        choices=HTTP_CLIENTS,
    )
    timeout: float = setting(10.0, "seconds before a request counts as timed out", minimum=0.001)
    retries: int = setting(8, "re-sends of a failed request before it is abandoned", minimum=0)
    backoff: float = setting(0.05, "first retry delay in seconds (doubles, with jitter)", minimum=0)
    backoff_max: float = setting(2.0, "longest retry delay in seconds", minimum=0)
    json: bool = setting(False, "print the report as JSON on stdout instead of a table")
    verify: bool = setting(True, "read /stats before and after and check the deltas")
    progress: bool = setting(True, "show a live progress bar on stderr (only on a terminal)")
    preset: str = setting(
        "",
        "a seed scenario, one of: " + ", ".join(PRESET_NAMES) + " (listed below)",
        metavar="NAME",
    )
    token: str = setting(
        "", "bearer token for POST /publish (the server's AGGREGATOR_PUBLISH_TOKEN)", secret=True
    )
    read_token: str = setting(
        "", "bearer token for GET /stats (the server's AGGREGATOR_READ_TOKEN)", secret=True
    )

    @staticmethod
    def env_name(field: str) -> str:
        return ENV_PREFIX + field.upper()

    @staticmethod
    def flag_name(field: str) -> str:
        return flag_name(field)


PRESETS: dict[str, dict[str, Any]] = {  # in the order of PRESET_NAMES
    "uts": {"events": 5_000, "dup_ratio": 0.2},
    "uas": {"events": 20_000, "dup_ratio": 0.3},
    "k6": {"events": 0, "duration": 20.0, "concurrency": 50, "batch": 50, "dup_ratio": 0.37},
}


def _check(options: Options) -> Options:
    """The rules that tie options together (each option's own rule is checked as it is read)."""
    if options.dup_ratio >= 1:
        raise OptionsError(f"--dup-ratio is {options.dup_ratio}; it must be below 1")
    if options.events == 0 and options.duration == 0:
        raise OptionsError("--events 0 needs a --duration: the run must be bounded")
    if options.http == "raw" and not options.url.startswith("http://"):
        raise OptionsError(f"--http raw speaks plain http:// only; --url is {options.url!r}")
    return options


def describe_presets() -> str:
    return "; ".join(
        f"{name}: " + ", ".join(f"{flag_name(k)} {v}" for k, v in values.items())
        for name, values in PRESETS.items()
    )


def parser(prog: str = "aggregator-sim") -> argparse.ArgumentParser:
    return settings_parser(
        Options, prog=prog, description=DESCRIPTION, prefix=ENV_PREFIX, epilog=_epilog()
    )


def _epilog() -> str:
    return (
        f"Every flag can also be set as an environment variable {ENV_PREFIX}<NAME>. "
        f"Presets: {describe_presets()}."
    )


def load_options(
    argv: Sequence[str] = (), environ: Mapping[str, str] | None = None, prog: str = "aggregator-sim"
) -> Options:
    """Options from defaults, then the preset, then ``environ``, then ``argv``."""
    environ = os.environ if environ is None else environ
    options = load(
        Options,
        argv,
        environ,
        prog=prog,
        description=DESCRIPTION,
        prefix=ENV_PREFIX,
        epilog=_epilog(),
        presets=PRESETS,
    )
    return _check(options)
