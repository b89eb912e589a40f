"""``python -m aggregator``: parse the Config, run the server, drain on SIGTERM/SIGINT.

Once the server begins to stop — a signal, a store connection in an unknown state, or a task
that crashed — the process has a deadline: ``shutdown_grace_seconds`` for the requests, then
``STOP_MARGIN_SECONDS`` for the last transaction and closing the store; a second signal leaves
it ``FORCED_STOP_SECONDS``. Past the deadline it exits 1 at once with one line: a store call
that never returns (a dead disk or network) or a connection that ignores cancellation must not
keep a server that no longer serves alive, where no supervisor restarts it (crash-only; the
store recovers at the next start, and nothing acknowledged is lost).
"""

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

import gc  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import traceback  # noqa: E402
from collections.abc import AsyncIterator, Sequence  # noqa: E402

import trio  # noqa: E402

from aggregator.config import Config, ConfigError, load_config  # noqa: E402
from aggregator.service import serve  # noqa: E402
from aggregator.store import (  # noqa: E402
    StoreBroken,
    StoreDamaged,
    StoreMismatch,
    StoreUnavailable,
)

LOGGER = logging.getLogger("aggregator")
STOP_MARGIN_SECONDS = 5.0
FORCED_STOP_SECONDS = 5.0  # a loaded machine may take seconds to end every task and close


class StopClock:
    """The deadline by which a stopping process must be gone; ``run`` enforces it."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._scope = trio.CancelScope()
        self.cause = "the server began to stop on its own (the reason is logged above)"

    def hurry(self, seconds: float, cause: str) -> None:
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + seconds)
        self.cause = cause

    async def run(self, shutdown: trio.Event) -> None:
        await shutdown.wait()
        began = trio.current_time()
        self._scope.deadline = min(self._scope.deadline, began + self._seconds)
        with self._scope:
            await trio.sleep_forever()
        sys.stderr.write(
            f"aggregator: fatal: not stopped {trio.current_time() - began:.1f} s after "
            f"{self.cause}: something does not return (a store call, a connection); exited "
            "without closing the store, which recovers at the next start\n"
        )
        sys.stderr.flush()
        os._exit(1)


async def _watch_signals(
    signals: AsyncIterator[int],
    shutdown: trio.Event,
    server: trio.CancelScope,
    clock: StopClock,
    grace: float,
) -> None:
    received = 0
    async for signum in signals:
        name = signal.Signals(signum).name
        received += 1
        if received > 1:
            LOGGER.warning("second %s: stopping now", name)
            clock.hurry(FORCED_STOP_SECONDS, f"a second {name}")
            server.cancel()
            return
        LOGGER.info("%s: finishing accepted requests, then stopping (up to %s s)", name, grace)
        clock.hurry(grace + STOP_MARGIN_SECONDS, name)
        shutdown.set()  # it may be set already: the server began to stop on its own


async def _run(config: Config) -> None:
    shutdown = trio.Event()
    clock = StopClock(config.shutdown_grace_seconds + STOP_MARGIN_SECONDS)
    async with trio.open_nursery() as process:
        # Outside the server's nursery: its deadline holds while that nursery unwinds.
        process.start_soon(clock.run, shutdown)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _watch_signals,
                    signals,
                    shutdown,
                    nursery.cancel_scope,
                    clock,
                    config.shutdown_grace_seconds,
                )
                await serve(config, shutdown=shutdown)
                nursery.cancel_scope.cancel()
        process.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        sys.stderr.write(f"aggregator: error: {exc}\n")
        raise SystemExit(2) from None
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # What the imports made lives as long as the process: out of the collector's reach, each
    # full collection under load took ~30 ms instead of ~6 (a pause every request waits out).
    gc.freeze()
    try:
        trio.run(_run, config)
    except BaseException as exc:
        problem = _sole(exc)
        if isinstance(problem, StoreDamaged):
            # Not crash-only: a restart meets the same damage. The line says what to do.
            sys.stderr.write(f"aggregator: error: {problem}\n")
        elif isinstance(problem, StoreBroken):
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
        elif isinstance(problem, KeyboardInterrupt | SystemExit):
            raise
        else:
            # A bug: its traceback, then the one line that says why the process stopped.
            traceback.print_exception(exc)
            sys.stderr.write(
                f"aggregator: fatal: an unexpected error stopped the server: "
                f"{type(problem).__name__}: {problem} (traceback above)\n"
            )
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
