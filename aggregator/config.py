"""The one Config: defaults ← environment (``AGGREGATOR_*``) ← command-line flags.

This module is the only place that reads the environment. Everything else receives a frozen
``Config`` (or the few values it needs) as an argument.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from aggregator.settings import SettingError, env_name, flag_name, load, setting

ENV_PREFIX = "AGGREGATOR_"
SYNCHRONOUS_MODES = ("full", "normal")
LOG_LEVELS = ("debug", "info", "warning", "error")
INTEGRITY_CHECKS = ("quick", "full", "off")
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


ConfigError = SettingError  # the server's name for it


def _port_rule(value: str) -> str | None:
    if value and not (value.isascii() and value.isdigit() and int(value) <= 65535):
        return "must be a port number 0–65535 (0 picks a free one), or empty for off"
    return None


def _port(value: str) -> int | None:
    return int(value) if value else None


def _database_url_rule(url: str) -> str | None:
    if url and not url.startswith(DATABASE_URL_SCHEMES):
        return "must start with postgresql:// or postgres:// (or be empty for SQLite)"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    host: str = setting("127.0.0.1", "interface to listen on")
    port: int = setting(8080, "TCP port; 0 picks a free one (logged)", minimum=0, maximum=65535)
    data_dir: Path = setting(Path("data"), "directory of the SQLite store (created if missing)")  # noqa: RUF009 (immutable)
    workers: int = setting(
        64, "worker tasks; bounds publish requests being validated or committed at once", minimum=1
    )
    synchronous: str = setting(
        "full",
        "SQLite synchronous mode: full survives power loss, normal process crashes",
        choices=SYNCHRONOUS_MODES,
    )
    max_body_bytes: int = setting(
        4 * 1024 * 1024, "largest request body, as received and again after gunzip", minimum=1
    )
    max_batch_events: int = setting(1000, "most events in one publish request", minimum=1)
    max_payload_bytes: int = setting(
        64 * 1024, "largest payload of one event (bytes of its JSON text)", minimum=2
    )
    queue_size: int = setting(
        128, "publish requests that may wait for a worker before 429 is returned", minimum=1
    )
    max_txn_events: int = setting(
        10_000,
        "most events group-committed in one transaction (one request is never split)",
        minimum=1,
    )
    shutdown_grace_seconds: float = setting(
        10.0, "on SIGTERM/SIGINT, how long in-flight requests may take to finish", minimum=0
    )
    cache_mib: int = setting(
        256,
        "SQLite page cache of the writer, in MiB (random event ids need a large one)",
        minimum=1,
    )
    readers: int = setting(4, "read-only store connections serving GET requests", minimum=1)
    max_topics: int = setting(
        10_000,
        "most topics the store may hold; a publish that would add one more is refused (422), "
        "as Loki limits streams: each topic is a line of /stats and /topics",
        minimum=1,
    )
    max_offset: int = setting(
        10_000,
        "largest offset of GET /events (deeper pages use the after cursor: an offset makes "
        "the store read and skip every row before it)",
        minimum=0,
    )
    integrity_check: str = setting(
        "quick",
        "SQLite: check every page of the store in the background once the server is ready "
        "(quick: PRAGMA quick_check, 0.3–4 s per million events; full: integrity_check, which "
        "also compares the indexes and the dedup index with the events; off); damage found stops "
        "the server",
        choices=INTEGRITY_CHECKS,
    )
    database_url: str = setting(
        "",
        "PostgreSQL URL (postgresql://user@host/db): several processes share one database; "
        "empty means the embedded SQLite store in --data-dir",
        metavar="URL",
        rule=_database_url_rule,
    )
    log_level: str = setting("info", "log level", choices=LOG_LEVELS)
    heartbeat_seconds: float = setting(
        15.0, "idle /subscribe streams get an SSE comment this often", minimum=0.001
    )
    subscriber_buffer_events: int = setting(
        10_000,
        "events buffered for one live subscriber; when full it is switched back to replay",
        minimum=1,
    )
    subscriber_buffer_bytes: int = setting(
        8 * 1024 * 1024,
        "bytes of events buffered for one live subscriber; when over it is switched back to "
        "replay (bounds the memory of slow subscribers whatever the payloads' size)",
        minimum=1,
    )
    replay_cache_bytes: int = setting(
        64 * 1024 * 1024,
        "bytes of encoded events kept for replaying subscribers (shared by all of them)",
        minimum=1,
    )
    max_subscribers: int = setting(
        1000, "open /subscribe streams; beyond this 503 is returned", minimum=1
    )
    tail_poll_seconds: float = setting(
        1.0,
        "also read new events this often when no local commit woke the tail: picks up "
        "what other processes sharing a PostgreSQL store commit; 0 turns it off",
        minimum=0,
    )
    publish_token: str = setting(
        "", "bearer token required by POST /publish; empty: no token needed", secret=True
    )
    read_token: str = setting(
        "", "bearer token required by the read endpoints; empty: no token needed", secret=True
    )
    read_timeout_seconds: float = setting(
        10.0,
        "a request's body must arrive within this long in all (408 otherwise, on any route)",
        minimum=0.01,
    )
    keep_alive_seconds: float = setting(
        5.0, "an idle keep-alive connection is closed after this long", minimum=0.01
    )
    send_timeout_seconds: float = setting(
        30.0,
        "a client that takes no data for this long while the server sends to it (a stalled "
        "/subscribe reader) is disconnected",
        minimum=0.01,
    )
    probe_seconds: float = setting(
        1.0, "while the store fails, how often the writer probes it for recovery", minimum=0.01
    )
    stall_seconds: float = setting(
        30.0,
        "a store call of the writer still running after this long makes /health 503 "
        "(a disk or database that stopped answering)",
        minimum=0.01,
    )
    retention_seconds: float = setting(
        0.0,
        "delete events received longer ago than this, oldest first, with their keys "
        "(the dedup window then equals it); 0: keep them forever",
        minimum=0,
    )
    retention_bytes: int = setting(
        0,
        "delete the oldest events, with their keys, while the store holds more than this; "
        "0: no limit",
        minimum=0,
    )
    read_process: bool = setting(
        True,
        "answer GET /events, /stats and /topics in a process of their own, so that reads do not "
        "wait behind publishing (docs/architecture.md)",
    )
    search: bool = setting(
        False,
        "keep a full-text index of payloads for GET /events?q= (docs/search.md); turning it on "
        "for a store with events builds the index in the background",
    )

    syslog_tcp_port: str = setting(
        "",
        "syslog over TCP (RFC 6587) on this port; 0 picks a free one (logged); empty: off",
        metavar="PORT",
        rule=_port_rule,
    )
    syslog_udp_port: str = setting(
        "",
        "syslog over UDP on this port; 0 picks a free one (logged); empty: off",
        metavar="PORT",
        rule=_port_rule,
    )
    syslog_max_connections: int = setting(
        256,
        "syslog TCP connections served at once; beyond this they wait to be accepted",
        minimum=1,
    )
    syslog_buffer_bytes: int = setting(
        256 * 1024,
        "syslog bytes read from one connection (or the UDP socket) and not yet committed; "
        "beyond this TCP stops reading that connection, UDP drops",
        minimum=1,
    )

    @property
    def syslog_tcp(self) -> int | None:
        """The syslog TCP port, None when off."""
        return _port(self.syslog_tcp_port)

    @property
    def syslog_udp(self) -> int | None:
        """The syslog UDP port, None when off."""
        return _port(self.syslog_udp_port)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "aggregator.sqlite3"

    @staticmethod
    def env_name(field: str) -> str:
        return env_name(FIELDS[field], ENV_PREFIX)

    @staticmethod
    def flag_name(field: str) -> str:
        return flag_name(field)


FIELDS = {field.name: field for field in dataclasses.fields(Config)}


def load_config(
    argv: Sequence[str] = (), environ: Mapping[str, str] | None = None, prog: str = "aggregator"
) -> Config:
    """Build the Config from defaults, then ``environ``, then ``argv``.

    Raises ``ConfigError`` with a one-line message for a bad value; argparse itself exits 2 with
    one line for an unknown flag.
    """
    environ = os.environ if environ is None else environ
    config = load(
        Config,
        argv,
        environ,
        prog=prog,
        description="Deduplicating pub-sub log aggregator.",
        prefix=ENV_PREFIX,
    )
    if config.database_url and config.retention_bytes:
        # PostgreSQL reuses the space of deleted rows after VACUUM, not at once: a size limit
        # would delete far more than it should.
        raise ConfigError(
            f"{Config.env_name('retention_bytes')} applies to the SQLite store only; with "
            f"{Config.env_name('database_url')} use {Config.env_name('retention_seconds')}"
        )
    return config
