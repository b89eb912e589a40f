"""``python -m aggregator``: parse the Config, run the server, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys


def _stop_before_serving(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing was accepted yet: a clean stop


# Until the server's own signal handling starts, SIGTERM and SIGINT stop it cleanly and at once:
# the imports below take about a second, and a process that is PID 1 (in a container) would
# otherwise ignore SIGTERM and print a KeyboardInterrupt traceback on SIGINT.
signal.signal(signal.SIGINT, _stop_before_serving)
signal.signal(signal.SIGTERM, _stop_before_serving)  # last: a test waits for it

import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import trio  # noqa: E402

from aggregator.config import Config, ConfigError, load_config  # noqa: E402
from aggregator.service import serve  # noqa: E402
from aggregator.store import StoreBroken, StoreMismatch, StoreUnavailable  # noqa: E402

LOGGER = logging.getLogger("aggregator")


async def _run(config: Config) -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if shutdown.is_set():
                        LOGGER.warning("second %s: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return
                    LOGGER.info(
                        "%s: finishing accepted requests, then stopping (up to %s s)",
                        signal.Signals(signum).name,
                        config.shutdown_grace_seconds,
                    )
                    shutdown.set()

            nursery.start_soon(watch_signals)
            await serve(config, shutdown=shutdown)
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        sys.stderr.write(f"aggregator: error: {exc}\n")
        raise SystemExit(2) from None
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_run, config)
    except BaseException as exc:
        problem = _sole(exc)
        if isinstance(problem, StoreBroken):
            # Crash-only on purpose: one line, non-zero, and a supervisor restarts the server.
            sys.stderr.write(
                f"aggregator: fatal: the store's connection is in an unknown state ({problem}); "
                "stopped so that a supervisor restarts the server on the intact store\n"
            )
        elif isinstance(problem, PermissionError):
            sys.stderr.write(
                f"aggregator: error: {problem}; the server runs as uid:gid {_uid()}: give it write "
                f"access to the data directory (e.g. chown {_uid()} {config.data_dir})\n"
            )
        elif isinstance(problem, StoreMismatch | StoreUnavailable | OSError):
            # A start-up error a user can act on: a foreign store, an unreachable database, a
            # taken port, an unwritable data dir.
            sys.stderr.write(f"aggregator: error: {problem}\n")
        else:
            raise  # a bug: keep its traceback
        raise SystemExit(1) from None


def _uid() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def _sole(exc: BaseException) -> BaseException:
    """``exc`` unwrapped from trio's exception groups of one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    main()
