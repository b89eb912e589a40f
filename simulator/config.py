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

ENV_PREFIX = "SIMULATOR_"
ID_STYLES = ("uuid4", "uuid7", "seq")
FORMATS = ("json", "ndjson")
HTTP_CLIENTS = ("httpx", "raw")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


class OptionsError(ValueError):
    """An option has a value the simulator cannot run with; the message names it and the rule."""


def _option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    choices: Sequence[str] = (),
    secret: bool = False,
) -> Any:
    """``secret``: left out of the repr, so a logged or printed Options never shows it."""
    return dataclasses.field(
        default=default,
        repr=not secret,
        metadata={"help": help, "minimum": minimum, "choices": tuple(choices)},
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    url: str = _option("http://127.0.0.1:8080", "the aggregator's base URL")
    events: int = _option(
        10_000,
        "events to send, distinct and re-sent together; 0: no count, use --duration",
        minimum=0,
    )
    duration: float = _option(
        0.0, "stop taking new batches after this many seconds; 0: none", minimum=0
    )
    dup_ratio: float = _option(
        0.2, "share of sends that re-send an earlier event (0 ≤ r < 1)", minimum=0
    )
    topics: int = _option(5, "number of topics the events spread over", minimum=1)
    batch: int = _option(100, "events per publish request (1 sends a bare event object)", minimum=1)
    concurrency: int = _option(8, "parallel clients, each with its own connection", minimum=1)
    rate: float = _option(
        0.0, "cap on events/s offered, all clients together; 0: no cap", minimum=0
    )
    id_style: str = _option("uuid4", "event_id style", choices=ID_STYLES)
    payload_bytes: int = _option(64, "approximate size of each payload's JSON text", minimum=16)
    format: str = _option("json", "request body format", choices=FORMATS)
    gzip: bool = _option(False, "gzip request bodies (Content-Encoding: gzip)")
    seed: int = _option(-1, "seed: same seed and options ⇒ same events; -1: a random seed")
    http: str = _option(
        "httpx",
        "HTTP client: httpx, or raw (a lean HTTP/1.1 client for load)",
        choices=HTTP_CLIENTS,
    )
    timeout: float = _option(10.0, "seconds before a request counts as timed out", minimum=0.001)
    retries: int = _option(8, "re-sends of a failed request before it is abandoned", minimum=0)
    backoff: float = _option(0.05, "first retry delay in seconds (doubles, with jitter)", minimum=0)
    backoff_max: float = _option(2.0, "longest retry delay in seconds", minimum=0)
    json: bool = _option(False, "print the report as JSON on stdout instead of a table")
    verify: bool = _option(True, "read /stats before and after and check the deltas")
    progress: bool = _option(True, "show a live progress bar on stderr (only on a terminal)")
    preset: str = _option("", "a seed scenario: uts, uas or k6 (see PRESETS)")
    token: str = _option(
        "", "bearer token for POST /publish (the server's AGGREGATOR_PUBLISH_TOKEN)", secret=True
    )
    read_token: str = _option(
        "", "bearer token for GET /stats (the server's AGGREGATOR_READ_TOKEN)", secret=True
    )

    @staticmethod
    def env_name(field: str) -> str:
        return ENV_PREFIX + field.upper()

    @staticmethod
    def flag_name(field: str) -> str:
        return "--" + field.replace("_", "-")


PRESETS: dict[str, dict[str, Any]] = {
    "uts": {"events": 5_000, "dup_ratio": 0.2},
    "uas": {"events": 20_000, "dup_ratio": 0.3},
    "k6": {"events": 0, "duration": 20.0, "concurrency": 50, "batch": 50, "dup_ratio": 0.37},
}


def _convert(field: dataclasses.Field[Any], raw: str, origin: str) -> Any:
    kind: type[Any] = type(field.default)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in TRUE + FALSE:
                raise ValueError(raw)
            return lowered in TRUE
        value = kind(raw)
    except ValueError:
        raise OptionsError(f"{origin}={raw!r} must be a {kind.__name__}") from None
    return value


def _check(options: Options) -> Options:
    for field in dataclasses.fields(Options):
        value = getattr(options, field.name)
        minimum = field.metadata["minimum"]
        choices = field.metadata["choices"]
        where = f"{Options.flag_name(field.name)} / {Options.env_name(field.name)}"
        if minimum is not None and value < minimum:
            raise OptionsError(f"{where} is {value}; it must be at least {minimum}")
        if choices and value not in choices:
            raise OptionsError(f"{where} is {value!r}; choose one of {', '.join(choices)}")
    if options.dup_ratio >= 1:
        raise OptionsError(f"--dup-ratio is {options.dup_ratio}; it must be below 1")
    if options.events == 0 and options.duration == 0:
        raise OptionsError("--events 0 needs a --duration: the run must be bounded")
    if options.http == "raw" and not options.url.startswith("http://"):
        raise OptionsError(f"--http raw speaks plain http:// only; --url is {options.url!r}")
    if options.preset and options.preset not in PRESETS:
        raise OptionsError(f"--preset {options.preset!r}: choose one of {', '.join(PRESETS)}")
    return options


def parser(prog: str = "aggregator-sim") -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog=prog,
        description="At-least-once publisher for the aggregator: duplicated load, then a check "
        "of /stats.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<NAME>. "
        "Presets: " + "; ".join(f"{name}: {values}" for name, values in PRESETS.items()),
    )
    for field in dataclasses.fields(Options):
        switch = isinstance(field.default, bool)  # --json alone means true; --json false too
        result.add_argument(
            Options.flag_name(field.name),
            dest=field.name,
            default=None,
            nargs="?" if switch else None,
            const="true" if switch else None,
            metavar="BOOL" if switch else "VALUE",
            help=f"{field.metadata['help']} (env {Options.env_name(field.name)}, "
            f"default {field.default!r})",
        )
    return result


def load_options(
    argv: Sequence[str] = (), environ: Mapping[str, str] | None = None, prog: str = "aggregator-sim"
) -> Options:
    """Options from defaults, then the preset, then ``environ``, then ``argv``."""
    environ = os.environ if environ is None else environ
    flags = vars(parser(prog).parse_args(list(argv)))
    raw: dict[str, tuple[str, str]] = {}  # field -> (value, where it came from)
    for field in dataclasses.fields(Options):
        env = Options.env_name(field.name)
        if flags[field.name] is not None:
            raw[field.name] = (flags[field.name], Options.flag_name(field.name))
        elif env in environ:
            raw[field.name] = (environ[env], env)
    preset = raw.get("preset", ("", ""))[0]
    if preset and preset not in PRESETS:
        raise OptionsError(f"preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS.get(preset, {}))
    fields = {f.name: f for f in dataclasses.fields(Options)}
    for name, (value, origin) in raw.items():
        values[name] = _convert(fields[name], value, origin)
    return _check(Options(**values))
