"""The one Config: defaults ← environment ← flags, and clear errors for bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aggregator.config import Config, ConfigError, load_config


def test_defaults() -> None:
    config = load_config([], {})
    assert config == Config()
    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 8080, Path("data"))
    assert config.workers >= 2 and config.synchronous == "full"
    assert config.database_path == Path("data/aggregator.sqlite3")


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {
        "AGGREGATOR_PORT": "9000",
        "AGGREGATOR_WORKERS": "3",
        "AGGREGATOR_SYNCHRONOUS": "NORMAL",
        "AGGREGATOR_SHUTDOWN_GRACE_SECONDS": "2.5",
        "AGGREGATOR_DATA_DIR": "/tmp/x",
    }
    config = load_config(["--port", "9100"], env)
    assert config.port == 9100
    assert config.workers == 3
    assert config.synchronous == "normal"
    assert config.shutdown_grace_seconds == 2.5
    assert config.data_dir == Path("/tmp/x")


# A value other than the default for every setting: read from a flag or from the environment,
# each must arrive in the Config (a setting that is ignored keeps its default and fails).
NON_DEFAULT = {
    "host": "0.0.0.0",
    "port": "9001",
    "data_dir": "/srv/events",
    "workers": "3",
    "synchronous": "normal",
    "max_body_bytes": "1000",
    "max_batch_events": "7",
    "max_payload_bytes": "99",
    "queue_size": "5",
    "max_txn_events": "11",
    "shutdown_grace_seconds": "2.5",
    "cache_mib": "9",
    "readers": "2",
    "integrity_check": "off",
    "database_url": "postgresql://u@h/db",
    "log_level": "debug",
    "heartbeat_seconds": "0.5",
    "subscriber_buffer_events": "13",
    "max_subscribers": "17",
    "tail_poll_seconds": "0.25",
    "publish_token": "p-secret",
    "read_token": "r-secret",
    "read_timeout_seconds": "3.5",
    "keep_alive_seconds": "4.5",
    "probe_seconds": "0.75",
    "stall_seconds": "12.5",
    "retention_seconds": "3600",
    "retention_bytes": "1000000",
    "syslog_tcp_port": "5514",
    "syslog_udp_port": "5515",
    "syslog_max_connections": "3",
    "syslog_buffer_bytes": "4096",
    "search": "true",
    "read_process": "false",
    "max_topics": "23",
    "max_offset": "29",
    "subscriber_buffer_bytes": "65536",
    "replay_cache_bytes": "131072",
    "send_timeout_seconds": "6.5",
}


def test_every_setting_has_a_flag_and_an_environment_variable() -> None:
    fields = {field.name: field for field in dataclasses.fields(Config)}
    assert set(NON_DEFAULT) == set(fields), "give every setting a non-default value here"
    for name, raw in NON_DEFAULT.items():
        default = fields[name].default
        expected = raw == "true" if isinstance(default, bool) else type(default)(raw)
        assert expected != fields[name].default, name
        flag = load_config([Config.flag_name(name), raw], {})
        env = load_config([], {Config.env_name(name): raw})
        assert getattr(flag, name) == getattr(env, name) == expected, name
        # Only that setting changed.
        assert dataclasses.replace(flag, **{name: fields[name].default}) == Config(), name


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "x"], {}, "--port='x' is not an integer"),
        (["--port", "70000"], {}, "at most 65535"),
        ([], {"AGGREGATOR_WORKERS": "0"}, "AGGREGATOR_WORKERS='0' must be at least 1"),
        ([], {"AGGREGATOR_MAX_BODY_BYTES": "-5"}, "must be at least 1"),
        ([], {"AGGREGATOR_SHUTDOWN_GRACE_SECONDS": "soon"}, "is not a number"),
        ([], {"AGGREGATOR_LOG_LEVEL": "loud"}, "one of: debug, info, warning, error"),
        (["--database-url", "sqlite:///x"], {}, "must start with postgresql:// or postgres://"),
    ],
)
def test_bad_values_name_the_setting_and_the_rule(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(argv, env)


def test_database_url_selects_postgresql_and_either_scheme_is_accepted() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert load_config([], {"AGGREGATOR_DATABASE_URL": url}).database_url == url
    assert load_config([], {}).database_url == ""  # SQLite
