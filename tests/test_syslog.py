"""The syslog door with real senders against a real server process: util-linux ``logger`` over
TCP and UDP (RFC 5424 and RFC 3164, octet counting and newline framing) and rsyslogd relaying
with ``omfwd`` over TCP. Each test checks ``/stats``, ``/events`` and ``/metrics``."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import wait_for
from tests.syslog import HOSTNAME, Door, logger, rsyslog_relay, syslog_server

FORWARD = 'action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" {options})'
PROTOCOL23 = 'template="RSYSLOG_SyslogProtocol23Format"'


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with syslog_server(tmp_path_factory.mktemp("syslog")) as door:
        yield door
        door.assert_healthy()


@pytest.mark.parametrize(
    ("udp", "flags", "format"),
    [
        (False, ["--rfc5424"], "rfc5424"),
        (False, ["--rfc5424", "--octet-count"], "rfc5424"),
        (False, ["--rfc3164"], "rfc3164"),
        (False, ["--rfc3164", "--octet-count"], "rfc3164"),
        (False, [], "rfc5424"),  # logger's default
        (True, ["--rfc5424"], "rfc5424"),
        (True, ["--rfc3164"], "rfc3164"),
        (True, [], "rfc5424"),
    ],
    ids=["tcp-5424", "tcp-5424-octet", "tcp-3164", "tcp-3164-octet", "tcp-default",
         "udp-5424", "udp-3164", "udp-default"],
)  # fmt: skip
def test_logger_message_is_stored_as_the_mapping_says(
    door: Door, udp: bool, flags: list[str], format: str
) -> None:
    app = "logger-" + "-".join([("udp" if udp else "tcp"), *(f.strip("-") for f in flags)])
    transport = "udp" if udp else "tcp"
    before, stored_before = door.counters(), door.messages()[transport, "stored"]
    logger(door, "-t", app, "-p", "local3.warning", *flags, f"hello from {app}", udp=udp)
    [event] = door.wait_events(app, 1)
    assert (event["topic"], event["source"]) == (app, HOSTNAME)
    assert len(event["event_id"]) == 32
    assert event["payload"]["format"] == format
    assert event["payload"]["message"] == f"hello from {app}"
    assert (event["payload"]["facility"], event["payload"]["severity"]) == ("local3", "warning")
    if format == "rfc5424":
        assert event["payload"]["structured_data"]["timeQuality"]["tzKnown"] == "1"
        assert event["timestamp"][19] == "."  # logger's microseconds, kept
    assert [a - b for a, b in zip(door.counters(), before, strict=True)] == [1, 1, 0]
    assert door.messages()[transport, "stored"] == stored_before + 1


def test_the_same_message_resent_is_one_event(door: Door) -> None:
    # No timestamp and no timeQuality: logger then sends byte-identical messages each time.
    same = ["-t", "resent", "--id=42", "--rfc5424=notq,notime", "the same line"]
    before, messages_before = door.counters(), door.messages()
    for _ in range(3):
        logger(door, *same)
    logger(door, *same, "--octet-count")
    logger(door, *same, udp=True)
    door.wait_events("resent", 1)
    wait_for_counters(door, before, (5, 1, 4))
    [event] = door.events("resent")
    assert event["payload"]["procid"] == "42" and event["payload"]["message"] == "the same line"
    # Which copy is stored first is a race (a datagram can overtake a TCP line that is still in
    # its group commit): one stored, four duplicates, counted under their own transports.
    after = door.messages()

    def moved(transport: str, result: str) -> float:
        key = (transport, result)
        return after.get(key, 0) - messages_before.get(key, 0)

    assert moved("tcp", "stored") + moved("udp", "stored") == 1
    assert moved("tcp", "duplicate") + moved("udp", "duplicate") == 4
    assert moved("udp", "stored") + moved("udp", "duplicate") == 1


def wait_for_counters(door: Door, before: tuple[int, ...], delta: tuple[int, ...]) -> None:
    def arrived() -> bool:
        return tuple(a - b for a, b in zip(door.counters(), before, strict=True)) == delta

    wait_for(arrived, f"counters to move by {delta}")


def test_rsyslog_relays_with_omfwd_over_tcp(
    door: Door, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Three forwarding actions per message: RFC 5424 octet-counted (rsyslog counts the LF),
    RFC 5424 newline-framed, and rsyslog's default (RFC 3164 style, no colon after the tag).
    The first two carry the same bytes: one event, one duplicate."""
    actions = [
        FORWARD.format(port=door.tcp, options=f'{PROTOCOL23} TCP_Framing="octet-counted"'),
        FORWARD.format(port=door.tcp, options=PROTOCOL23),
        FORWARD.format(port=door.tcp, options=""),
    ]
    lines = [f"relayed line {n}" for n in range(5)]
    before = door.counters()
    with rsyslog_relay(tmp_path_factory.mktemp("rsyslog"), actions) as relay_port:
        stdin = "".join(f"{line}\n" for line in lines).encode()
        subprocess.run(
            ["logger", "-n", "127.0.0.1", "-P", str(relay_port), "-T", "--rfc5424",
             "-t", "relayed", "-p", "daemon.err"],
            input=stdin, check=True, timeout=30,
        )  # fmt: skip
        # Before rsyslogd stops: logger exits once its lines are in rsyslogd's socket buffer,
        # and rsyslogd stopped at once dropped lines it had not read yet (2 runs in 24 under
        # load, before and after the syslog fixes alike): TCP's ACK is no acknowledgement.
        events = door.wait_events("relayed", 10)
        wait_for_counters(door, before, (15, 10, 5))
    # rsyslogd has stopped and closed its connections: nothing more arrived.
    assert door.counters() == tuple(b + d for b, d in zip(before, (15, 10, 5), strict=True))
    by_format = {
        f: [e["payload"]["message"] for e in events if e["payload"]["format"] == f]
        for f in ("rfc5424", "rfc3164")
    }
    assert sorted(by_format["rfc5424"]) == lines and sorted(by_format["rfc3164"]) == lines
    assert {(e["source"], e["payload"]["facility"], e["payload"]["severity"]) for e in events} == {
        (HOSTNAME, "daemon", "err")
    }


@pytest.mark.parametrize(
    ("tag", "flags", "udp", "topic"),
    [
        ("tab\there", ["--rfc5424"], False, "tab_here"),
        ("ctl\x01x", ["--rfc3164"], True, "ctl_x"),
    ],
    ids=["tab-5424-tcp", "control-3164-udp"],
)
def test_an_app_name_that_breaks_the_topic_rule_is_sanitised(
    door: Door, tag: str, flags: list[str], udp: bool, topic: str
) -> None:
    logger(door, "-t", tag, *flags, "sanitised", udp=udp)
    [event] = door.wait_events(topic, 1)
    assert event["payload"]["app_name"] == tag  # the original, as sent
    assert topic in door.http.get("/stats").json()["topics"]


def test_a_tag_of_digits_is_no_topic_and_tagless_text_is_kept(door: Door) -> None:
    """logger's TAG ``4242`` (a Cisco-style sequence number would make a topic per message),
    and TAG-less lines without a timestamp that the decoder rejected before."""
    logger(door, "-t", "4242", "--rfc3164", "numbered by logger")
    door.send_tcp(b"<13>1 file copied\n<13>2024-01-01 backup done\n")

    def messages() -> set[str]:
        return {e["payload"]["message"] for e in door.events("syslog")}

    wanted = {"4242: numbered by logger", "1 file copied", "2024-01-01 backup done"}
    wait_for(lambda: wanted <= messages(), "the three lines under the topic syslog")
    assert "4242" not in door.http.get("/stats").json()["topics"]


def test_two_hosts_identical_lines_without_hostname_are_two_events(door: Door) -> None:
    """No HOSTNAME: the peer's address is the source, and part of the id. Before, the second
    host's line was counted a duplicate of the first's and lost."""
    same = b"<13>Nov 30 10:00:00 nohost[1]: the same line from two hosts"
    before = door.counters()
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.3"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
            sock.sendto(same, ("127.0.0.1", door.udp))
    wait_for_counters(door, before, (3, 2, 1))
    assert sorted(e["source"] for e in door.events("nohost")) == ["127.0.0.2", "127.0.0.3"]
