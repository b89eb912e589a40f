"""Opening the PostgreSQL store's connections, and what each session is pinned to.

A setting inherited from the server, the database (``ALTER DATABASE … SET``), the role, the URL
or ``PGOPTIONS`` must not change what the store promises, so every session sets what matters
itself, after connecting:

- ``client_encoding`` UTF8, and a database whose own encoding is not UTF8 is refused: LATIN1
  cannot hold every event's text, and SQL_ASCII hands text back as bytes.
- TCP keepalives and ``tcp_user_timeout`` (libpq parameters; the URL may give its own): a database
  that stops answering (host gone, network cut) fails the commit or read in flight within about
  ten seconds instead of the kernel's retransmission time (~15 minutes), which would also hold up
  shutdown, since a thread in a blocking call cannot be cancelled. The same on the server's side
  of the connection, so the database ends the session of an aggregator that is gone.
- the writer: ``synchronous_commit`` at least ``on`` (a 200 follows a durable COMMIT),
  ``lock_timeout`` and ``idle_in_transaction_session_timeout``; readers: ``statement_timeout``.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from aggregator.store.base import StoreMismatch, StoreUnavailable

LOGGER = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10
# libpq's TCP parameters, unless the URL gives its own. A live server's kernel acknowledges at
# once however busy PostgreSQL is, so these only ever cut connections to a peer that is gone.
TCP_PARAMETERS = {
    "keepalives": "1",
    "keepalives_idle": "5",  # seconds of silence before the first keepalive probe
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",  # ms that sent data (or a probe) may stay unacknowledged
}
# The server's side of each connection (session settings): the database notices a client that
# is gone (its host down, the network cut) and ends the session, releasing what it held, within
# seconds rather than the two hours of the usual keepalive default.
SERVER_TCP_SETTINGS = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
# A writer waits at most this long for a lock (as SQLite's busy_timeout), then answers 503. Waits
# on another aggregator's transaction last one commit; this only cuts waits on foreign locks.
WRITER_LOCK_TIMEOUT = "5s"
# The server ends a writer session left idle inside a transaction this long (a frozen or cut-off
# process), so its key locks and its place below the paging horizon do not outlive it.
WRITER_IDLE_IN_TRANSACTION_TIMEOUT = "10s"
# The longest a read may run (lock waits included) before it is cancelled and answered 503.
READ_TIMEOUT = "10s"
# Settings of synchronous_commit that wait for the local WAL flush (and a synchronous standby's
# flush, or more); anything else is raised to "on" on the writer's session.
DURABLE_COMMIT = ("on", "remote_apply")


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def describe(exc: psycopg.Error) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{first} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else first


def _out_of_descriptors() -> str:
    """What to add to a failed connect's reason when this process is out of file descriptors:
    libpq then says only "connection is bad: no error details available"."""
    try:
        os.close(os.dup(2))
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return (
                f" ({exc.strerror}: the process is out of file descriptors; raise its open-files "
                "limit, ulimit -n, or lower the clients' connections)"
            )
    return ""


def connect(url: str, application_name: str, settings: dict[str, str]) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (transactions are explicit: ``conn.transaction()``),
    READ COMMITTED, UTF8 both ways, with ``settings`` for its session. Raises
    ``StoreUnavailable`` when the server cannot be reached and ``StoreMismatch`` for a database
    that is not UTF8."""
    try:
        given = conninfo_to_dict(url)
        params = {key: value for key, value in TCP_PARAMETERS.items() if key not in given}
        params["connect_timeout"] = str(CONNECT_TIMEOUT_SECONDS)
        params["application_name"] = application_name
        params["client_encoding"] = "utf8"  # overrides the URL and PGCLIENTENCODING
        conn = psycopg.connect(make_conninfo(url, **params), autocommit=True)
    except psycopg.Error as exc:
        detail = describe(exc) + _out_of_descriptors()
        raise StoreUnavailable(f"cannot connect to {redact(url)}: {detail}") from exc
    except OSError as exc:
        # psycopg's wait for the connection opens an epoll descriptor: out of descriptors
        # (EMFILE) it raised this, which answered a publish 500 "internal error", not 503.
        raise StoreUnavailable(
            f"cannot connect to {redact(url)}: {exc.strerror or exc}{_out_of_descriptors()}"
        ) from exc
    encoding = conn.info.parameter_status("server_encoding")
    if encoding != "UTF8":
        conn.close()
        raise StoreMismatch(
            f"{redact(url)} is a {encoding} database; the aggregator needs UTF8 so that any "
            "event's text is stored as sent: create one with createdb -E UTF8 -T template0"
        )
    conn.isolation_level = IsolationLevel.READ_COMMITTED
    values = {**SERVER_TCP_SETTINGS, **settings}
    try:
        conn.execute(
            "SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(values)),
            [item for pair in values.items() for item in pair],
        )
    except psycopg.Error as exc:
        conn.close()
        raise StoreUnavailable(f"cannot set up a session: {describe(exc)}") from exc
    return conn


def connect_writer(url: str) -> psycopg.Connection[Any]:
    conn = connect(
        url,
        "aggregator-writer",
        {
            "lock_timeout": WRITER_LOCK_TIMEOUT,
            "idle_in_transaction_session_timeout": WRITER_IDLE_IN_TRANSACTION_TIMEOUT,
        },
    )
    try:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        inherited = str(row[0]) if row else ""
        if inherited not in DURABLE_COMMIT:
            LOGGER.warning(
                "synchronous_commit is %r for this session (a server, database, role or URL "
                "setting); the writer sets it to 'on': a publish is answered after its COMMIT "
                "is flushed",
                inherited,
            )
            conn.execute("SET synchronous_commit = on")
    except psycopg.Error as exc:
        conn.close()
        raise StoreUnavailable(f"cannot set up a writer session: {describe(exc)}") from exc
    return conn


def connect_reader(url: str) -> psycopg.Connection[Any]:
    return connect(url, "aggregator-reader", {"statement_timeout": READ_TIMEOUT})
