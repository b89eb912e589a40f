"""rsyslog's omelasticsearch (Debian's rsyslog-elasticsearch) into the bulk door: rsyslogd in the
foreground, lines sent to it with ``logger``, arriving exactly once although the server answers
some bulk requests 429 and 503, one of them after it had committed the events.

omelasticsearch (8.2302) resends a bulk request only when the HTTP transfer fails; any complete
answer, 429 and 503 included, is final to it and its messages would be lost. So the door cuts
the connection for "retry later" to a client without a User-Agent (docs/elasticsearch.md), and
rsyslog suspends the action, checks ``GET /_cat/health`` and sends the batch again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.elastic import Door, elastic_server
from tests.support import wait_for

TOKEN = "rsyslog-token"
# Two actions per message: `create` with the message's own id (bulkid: tag and text), and the
# default `index` with no id (the door's content hash; the template leaves the time out, so the
# same line is the same document).
CONFIG = """
global(workDirectory="{work}")
module(load="imtcp")
module(load="omelasticsearch")
template(name="doc" type="list" option.json="on") {{
  constant(value="{{\\"@timestamp\\":\\"") property(name="timereported" dateFormat="rfc3339")
  constant(value="\\",\\"host\\":\\"") property(name="hostname")
  constant(value="\\",\\"program\\":\\"") property(name="programname")
  constant(value="\\",\\"message\\":\\"") property(name="msg")
  constant(value="\\"}}")
}}
template(name="timeless" type="list" option.json="on") {{
  constant(value="{{\\"host\\":\\"") property(name="hostname")
  constant(value="\\",\\"message\\":\\"") property(name="msg")
  constant(value="\\"}}")
}}
template(name="line-id" type="string" string="%programname%-%msg%")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{work}/port" ruleset="es")
ruleset(name="es") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" uid="rsyslog"
         pwd="{token}" bulkmode="on" template="doc" searchIndex="rsyslog-create"
         writeoperation="create" bulkid="line-id" dynbulkid="on"
         errorfile="{work}/errors.json"
         action.resumeRetryCount="-1" action.resumeInterval="1")
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" uid="rsyslog"
         pwd="{token}" bulkmode="on" template="timeless" searchIndex="rsyslog-hash"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""
LINES = [f"line {n}" for n in range(20)]


@contextmanager
def rsyslogd(work: Path, port: int) -> Iterator[int]:
    """rsyslogd in the foreground, shipping to ``port``; yields its imtcp port."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "rsyslog.conf"
    conf.write_text(CONFIG.format(work=work, port=port, token=TOKEN))
    with (work / "rsyslogd.log").open("w") as log:
        proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    port_file = work / "port"
    try:
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), "rsyslogd's port")
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, (work / "rsyslogd.log").read_text()


def send_lines(relay: int) -> None:
    subprocess.run(
        ["logger", "-n", "127.0.0.1", "-P", str(relay), "-T", "--rfc5424", "-t", "shipper"],
        input="".join(f"{line}\n" for line in LINES).encode(),
        check=True,
        timeout=30,
    )


def settled(door: Door, unique: int, steps: int) -> bool:
    """Every line is stored, the plan's ``steps`` were met, and the batch committed before its
    503 has been sent again (its events came back as duplicates): nothing is left to resend."""
    met = door.faults_met()
    committed = sum(int(m.split()[1]) for m in met if m.startswith("committed"))
    _, stored, duplicates = door.counters()
    return len(met) == steps + 1 and stored == unique and duplicates == committed


@pytest.fixture
def door(tmp_path: Path) -> Iterator[Door]:
    faults = ["429", "stored-503", "503", "ok", "429"]
    with elastic_server(tmp_path / "data", token=TOKEN, faults=faults) as door:
        yield door
        door.assert_healthy()


def test_rsyslog_lines_arrive_exactly_once_through_429_and_503(door: Door, tmp_path: Path) -> None:
    with rsyslogd(tmp_path / "rsyslog", door.port) as relay:
        send_lines(relay)
        wait_for(lambda: settled(door, 40, 5), "the lines through the fault plan", timeout=60)
        created = door.events("rsyslog-create")
        hashed = door.events("rsyslog-hash")
        assert sorted(e["payload"]["message"] for e in created) == sorted(LINES)
        assert sorted(e["payload"]["message"] for e in hashed) == sorted(LINES)
        assert {e["event_id"] for e in created} == {f"shipper-{line}" for line in LINES}
        assert all(len(e["event_id"]) == 32 for e in hashed)
        received, unique, duplicates = door.counters()
        assert unique == 40 and duplicates >= 1 and received == unique + duplicates
        # The same lines again: `create` of stored ids is 409 (rsyslog's error file has them),
        # `index` of the same documents stores nothing new.
        send_lines(relay)
        wait_for(lambda: door.counters()[0] >= received + 40, "the second send", timeout=60)
    assert door.counters() == (received + 40, 40, duplicates + 40)
    # Between a cut answer and its resend, rsyslog checked the door's health, and it made no
    # other call: every request it sent was a bulk request or that check.
    timed = "aggregator_http_request_duration_seconds_count"
    assert door.metric(timed + '{method="GET",route="/_cat/health"}') >= 1
    assert door.metric(timed + '{method="GET",route="other"}') == 0
    assert door.metric(timed + '{method="HEAD",route="other"}') == 0
    errors = (tmp_path / "rsyslog" / "errors.json").read_text()
    assert errors.count("version_conflict_engine_exception") >= len(LINES)
