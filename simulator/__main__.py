"""``python -m simulator`` / ``aggregator-sim``: send the load, report, verify; exit 0 only if
every check holds (1: a check failed; 2: bad options, or the aggregator cannot be reached or
refuses the token)."""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial

import httpx
import trio
from rich.console import Console

from simulator.client import Poster, Refused, RetryPolicy
from simulator.config import Options, OptionsError, load_options
from simulator.generator import Generator
from simulator.rawhttp import RawClient
from simulator.report import render, serve_progress, summary
from simulator.runner import Load, RunResult, Tally, run_load
from simulator.verify import Expectation, fetch_stats, verify

LOGGER = logging.getLogger("simulator")
# Where the token for a refused path is set (the server's message names its own setting).
TOKEN_HINT = {
    "/publish": "--token / SIMULATOR_TOKEN",
    "/stats": "--read-token / SIMULATOR_READ_TOKEN",
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _poster(
    options: Options, tls: ssl.SSLContext, transport: httpx.AsyncBaseTransport | None
) -> AbstractAsyncContextManager[Poster]:
    if options.http == "raw" and transport is None:
        return RawClient(options.url, options.timeout, _bearer(options.token))
    return _http_factory(options, tls, transport, options.token)


def _http_factory(
    options: Options,
    tls: ssl.SSLContext,
    transport: httpx.AsyncBaseTransport | None,
    token: str,
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=options.url,
        transport=transport,
        headers=_bearer(token),
        timeout=options.timeout,
        verify=tls,  # one context for all clients: building one costs ~20 ms
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


def expectation(result: RunResult) -> Expectation:
    tally = result.tally
    return Expectation(
        distinct_keys=result.distinct_keys,
        acked_events=tally.acked_events,
        ambiguous_events=tally.ambiguous_events,
        abandoned_events=tally.abandoned_events,
        stored_acked=tally.stored,
        bad_acks=tally.bad_acks,
    )


async def run(
    options: Options,
    seed: int,
    out: Console,
    err: Console,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """One simulator run; the exit code. ``transport`` replaces the network (tests)."""
    try:
        return await _run(options, seed, out, err, transport)
    except* Refused as group:
        refused = _first(group)
    err.print(
        f"aggregator-sim: {refused}; pass that token as {TOKEN_HINT.get(refused.path, '--token')}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 2


def _first(group: BaseExceptionGroup[Refused]) -> Refused:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, Refused)
    return leaf


async def _run(
    options: Options,
    seed: int,
    out: Console,
    err: Console,
    transport: httpx.AsyncBaseTransport | None,
) -> int:
    generator = Generator.from_options(options, seed)
    tls = ssl.create_default_context()
    policy = RetryPolicy(options.retries, options.backoff, options.backoff_max)
    load = Load(
        generator,
        policy,
        partial(_poster, options, tls, transport),
        options.duration,
        options.rate,
        seed,
    )
    async with _http_factory(options, tls, transport, options.read_token) as control:
        try:
            before = await fetch_stats(control) if options.verify else None
        except httpx.HTTPError as exc:
            err.print(
                f"aggregator-sim: cannot read {options.url}/stats: {exc!r}; is it running?",
                markup=False,  # the error's text is not Rich markup, and one line, not wrapped
                highlight=False,
                soft_wrap=True,
            )
            return 2
        tally = Tally()
        async with trio.open_nursery() as nursery:
            if options.progress and not options.json and err.is_terminal:
                nursery.start_soon(serve_progress, tally, options.events, options.duration, err)
            result = await run_load(load, tally)
            nursery.cancel_scope.cancel()
        checks = None
        if before is not None:
            after = await fetch_stats(control)
            checks = verify(before, after, expectation(result))
    report = summary(result, seed, checks)
    if options.json:
        out.file.write(json.dumps(report, indent=2) + "\n")
    else:
        render(report, out)
    ok = report["ok"] if checks is not None else tally.abandoned_batches == 0
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> None:
    try:
        options = load_options(sys.argv[1:] if argv is None else argv)
    except OptionsError as exc:
        sys.stderr.write(f"aggregator-sim: error: {exc}\n")
        raise SystemExit(2) from None
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seed = options.seed if options.seed >= 0 else secrets.randbits(31)
    try:
        code = trio.run(run, options, seed, Console(), Console(stderr=True))
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # SIGINT (Ctrl-C, or a container's stop signal) is not a failed check; trio may raise it
        # inside an exception group from the load's nursery.
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is None:
            raise
        sys.stderr.write(f"aggregator-sim: interrupted (seed {seed}); nothing was verified\n")
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
