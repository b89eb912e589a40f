"""The settings machinery of every program here: the server's Config, the simulator's Options and
the dashboard's Options are frozen dataclasses whose fields are declared with ``setting``.

One order everywhere: defaults ← (a preset) ← environment ← command-line flags. Each field gets a
flag (``--max-body-bytes``) and an environment variable (``PREFIX_MAX_BODY_BYTES``, or its own
``env=`` name), is converted to its default's type and checked against its rule; a bad value is
one line naming where it came from and the rule (``AGGREGATOR_WORKERS='0' must be at least 1``).
This module does not read the environment itself: the caller passes it in.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")
_NOUNS = {int: "an integer", float: "a number", bool: "true or false"}
_METAVARS = {int: "N", float: "NUMBER", bool: "BOOL", Path: "DIR", str: "TEXT"}
# What a value means, by the field's name, for --help (``--read-timeout-seconds SECONDS``).
_NAMED = (
    ("_seconds", "SECONDS"),
    ("_bytes", "BYTES"),
    ("_mib", "MIB"),
    ("url", "URL"),
    ("token", "TOKEN"),
    ("host", "HOST"),
    ("port", "PORT"),
    ("duration", "SECONDS"),
    ("timeout", "SECONDS"),
    ("backoff", "SECONDS"),
    ("interval", "SECONDS"),
)


def _metavar(field: dataclasses.Field[Any]) -> str:
    if field.metadata["metavar"]:
        return str(field.metadata["metavar"])
    if field.metadata["choices"]:
        return "{" + ",".join(field.metadata["choices"]) + "}"
    kind = type(field.default)
    if kind in (str, int, float):
        for suffix, metavar in _NAMED:
            if suffix.strip("_") in field.name:
                return metavar
    if isinstance(field.default, Path):
        return "DIR"
    return _METAVARS.get(kind, "VALUE")


class SettingError(ValueError):
    """A setting has a value the program cannot run with; the message names it and the rule."""


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[str] = (),
    secret: bool = False,
    metavar: str | None = None,
    env: str | None = None,
    rule: Callable[[Any], str | None] | None = None,
) -> Any:
    """A field of a settings dataclass. A ``secret`` is left out of ``repr()``, so logging the
    settings never shows it; ``env`` replaces the environment variable's derived name; ``rule``
    checks a converted value and says what is wrong (without echoing it: it may be a secret)."""
    return dataclasses.field(
        default=default,
        repr=not secret,
        metadata={
            "help": help,
            "minimum": minimum,
            "maximum": maximum,
            "choices": tuple(choices),
            "metavar": metavar,
            "env": env,
            "rule": rule,
        },
    )


def http_url_rule(url: str) -> str | None:
    """The rule of a client's server URL (the simulator's, the dashboard's)."""
    if not url.startswith(("http://", "https://")):
        return f"must be an http:// or https:// URL, such as http://127.0.0.1:8080; got {url!r}"
    return None


def env_name(field: dataclasses.Field[Any], prefix: str) -> str:
    name: str | None = field.metadata["env"]
    return name or prefix + field.name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def convert(field: dataclasses.Field[Any], raw: str, origin: str) -> Any:
    """``raw`` as the field's type, checked against its rule; ``origin`` names where it came
    from (a flag or an environment variable) in the error."""
    kind: Any = type(field.default)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in TRUE + FALSE:
                raise ValueError(raw)
            value: Any = lowered in TRUE
        else:
            value = kind(raw.strip()) if kind is not str else raw
    except ValueError:
        noun = _NOUNS.get(kind, kind.__name__)
        raise SettingError(f"{origin}={raw!r} is not {noun}") from None
    choices = field.metadata["choices"]
    if choices:
        value = value.lower()
        if value not in choices:
            raise SettingError(f"{origin}={raw!r} must be one of: {', '.join(choices)}")
    minimum, maximum = field.metadata["minimum"], field.metadata["maximum"]
    if minimum is not None and value < minimum:
        raise SettingError(f"{origin}={raw!r} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise SettingError(f"{origin}={raw!r} must be at most {maximum}")
    rule = field.metadata["rule"]
    problem = rule(value) if rule is not None else None
    if problem:
        raise SettingError(f"{origin} {problem}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with where to look), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(
    settings: type[Any], *, prog: str, description: str, prefix: str, epilog: str = ""
) -> argparse.ArgumentParser:
    """A flag per field, each with its help, environment variable and default."""
    result = _Parser(
        prog=prog,
        description=description,
        epilog=epilog or f"Every flag can also be set as an environment variable {prefix}<NAME>.",
    )
    for field in dataclasses.fields(settings):
        kind = type(field.default)
        default = field.default
        shown = "none" if default == "" else str(default).lower() if kind is bool else str(default)
        switch = kind is bool  # --json alone means true; --json false too
        result.add_argument(
            flag_name(field.name),
            dest=field.name,
            default=None,
            nargs="?" if switch else None,
            const="true" if switch else None,
            metavar=_metavar(field),
            help=f"{field.metadata['help']} (env {env_name(field, prefix)}, default {shown})",
        )
    return result


def load(
    settings: type[T],
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    prog: str,
    description: str,
    prefix: str,
    epilog: str = "",
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> T:
    """``settings`` from its defaults, then a preset (the field ``preset`` names one in
    ``presets``), then ``environ``, then ``argv``. Raises ``SettingError`` for a bad value;
    argparse exits 2 with one line for an unknown flag."""
    options = parser(settings, prog=prog, description=description, prefix=prefix, epilog=epilog)
    flags = vars(options.parse_args(list(argv)))
    fields = {field.name: field for field in dataclasses.fields(settings)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, field in fields.items():
        env = env_name(field, prefix)
        if flags[name] is not None:
            values[name] = convert(field, flags[name], flag_name(name))
        elif env in environ:
            values[name] = convert(field, environ[env], env)
    if presets is not None and values.get("preset"):
        preset = values["preset"]
        if preset not in presets:
            raise SettingError(f"preset {preset!r} is unknown; choose one of {', '.join(presets)}")
        values = {**presets[preset], **values}
    return settings(**values)
