"""The one Config: defaults ← environment (``AGGREGATOR_*``) ← command-line flags.

This module is the only place that reads the environment. Everything else receives a frozen
``Config`` (or the few values it needs) as an argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV_PREFIX = "AGGREGATOR_"
SYNCHRONOUS_MODES = ("full", "normal")
LOG_LEVELS = ("debug", "info", "warning", "error")
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


class ConfigError(ValueError):
    """A setting has a value the server cannot run with; the message names it and the rule."""


def _setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    choices: Sequence[str] = (),
    flag: bool = True,
    secret: bool = False,
) -> Any:
    # A secret is left out of repr(), so that logging a Config never shows it.
    return dataclasses.field(
        default=default,
        repr=not secret,
        metadata={"help": help, "minimum": minimum, "choices": tuple(choices), "flag": flag},
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    host: str = _setting("127.0.0.1", "interface to listen on")
    port: int = _setting(8080, "TCP port; 0 picks a free one (logged)", minimum=0)
    data_dir: Path = _setting(Path("data"), "directory of the SQLite store (created if missing)")  # noqa: RUF009 (immutable)
    workers: int = _setting(
        64, "worker tasks; bounds publish requests being validated or committed at once", minimum=1
    )
    synchronous: str = _setting(
        "full",
        "SQLite synchronous mode: full survives power loss, normal process crashes",
        choices=SYNCHRONOUS_MODES,
    )
    max_body_bytes: int = _setting(
        4 * 1024 * 1024, "largest request body, as received and again after gunzip", minimum=1
    )
    max_batch_events: int = _setting(1000, "most events in one publish request", minimum=1)
    max_payload_bytes: int = _setting(
        64 * 1024, "largest payload of one event (bytes of its JSON text)", minimum=2
    )
    queue_size: int = _setting(
        128, "publish requests that may wait for a worker before 429 is returned", minimum=1
    )
    max_txn_events: int = _setting(
        10_000,
        "most events group-committed in one transaction (one request is never split)",
        minimum=1,
    )
    shutdown_grace_seconds: float = _setting(
        10.0, "on SIGTERM/SIGINT, how long in-flight requests may take to finish", minimum=0
    )
    cache_mib: int = _setting(
        256,
        "SQLite page cache of the writer, in MiB (random event ids need a large one)",
        minimum=1,
    )
    readers: int = _setting(4, "read-only store connections serving GET requests", minimum=1)
    database_url: str = _setting(
        "",
        "PostgreSQL URL (postgresql://user@host/db): several processes share one database; "
        "empty means the embedded SQLite store in --data-dir",
    )
    log_level: str = _setting("info", "log level", choices=LOG_LEVELS)
    heartbeat_seconds: float = _setting(
        15.0, "idle /subscribe streams get an SSE comment this often", minimum=0.001
    )
    subscriber_buffer_events: int = _setting(
        10_000,
        "events buffered for one live subscriber; when full it is switched back to replay",
        minimum=1,
    )
    max_subscribers: int = _setting(
        1000, "open /subscribe streams; beyond this 503 is returned", minimum=1
    )
    tail_poll_seconds: float = _setting(
        1.0,
        "also read new events this often when no local commit woke the tail: picks up "
        "what other processes sharing a PostgreSQL store commit; 0 turns it off",
        minimum=0,
    )
    publish_token: str = _setting(
        "", "bearer token required by POST /publish; empty: no token needed", secret=True
    )
    read_token: str = _setting(
        "", "bearer token required by the read endpoints; empty: no token needed", secret=True
    )
    read_timeout_seconds: float = _setting(
        10.0,
        "a request's body must arrive within this long in all (408 otherwise, on any route)",
        minimum=0.01,
    )
    keep_alive_seconds: float = _setting(
        5.0, "an idle keep-alive connection is closed after this long", minimum=0.01
    )
    probe_seconds: float = _setting(
        1.0, "while the store fails, how often the writer probes it for recovery", minimum=0.01
    )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "aggregator.sqlite3"

    @staticmethod
    def env_name(field: str) -> str:
        return ENV_PREFIX + field.upper()

    @staticmethod
    def flag_name(field: str) -> str:
        return "--" + field.replace("_", "-")


def _convert(field: dataclasses.Field[Any], raw: str, origin: str) -> Any:
    """Turn one raw string into the field's type, checking its rule; ``origin`` names the source."""
    kind: Any = type(field.default)
    try:
        value: Any = kind(raw.strip()) if kind is not str else raw
    except ValueError:
        noun = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise ConfigError(f"{origin}={raw!r} is not {noun}") from None
    choices = field.metadata["choices"]
    if choices:
        value = value.lower()
        if value not in choices:
            raise ConfigError(f"{origin}={raw!r} must be one of: {', '.join(choices)}")
    minimum = field.metadata["minimum"]
    if minimum is not None and value < minimum:
        raise ConfigError(f"{origin}={raw!r} must be at least {minimum}")
    if field.name == "port" and value > 65535:
        raise ConfigError(f"{origin}={raw!r} must be at most 65535")
    if field.name == "database_url" and value and not value.startswith(DATABASE_URL_SCHEMES):
        # Never echo the value: it may carry a password.
        raise ConfigError(
            f"{origin} must start with postgresql:// or postgres:// (or be empty for SQLite)"
        )
    return value


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Deduplicating pub-sub log aggregator.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<NAME>.",
    )
    for field in dataclasses.fields(Config):
        parser.add_argument(
            Config.flag_name(field.name),
            dest=field.name,
            default=None,
            metavar="VALUE",
            help=f"{field.metadata['help']} (env {Config.env_name(field.name)}, "
            f"default {field.default})",
        )
    return parser


def load_config(
    argv: Sequence[str] = (), environ: Mapping[str, str] | None = None, prog: str = "aggregator"
) -> Config:
    """Build the Config from defaults, then ``environ``, then ``argv``.

    Raises ``ConfigError`` with a one-line message for a bad value; argparse itself exits 2 for
    an unknown flag.
    """
    environ = os.environ if environ is None else environ
    flags = vars(_parser(prog).parse_args(list(argv)))
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Config):
        env = Config.env_name(field.name)
        if flags[field.name] is not None:
            values[field.name] = _convert(field, flags[field.name], Config.flag_name(field.name))
        elif env in environ:
            values[field.name] = _convert(field, environ[env], env)
    config = Config(**values)
    return config
