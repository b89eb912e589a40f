"""The Elasticsearch door with real clients against a real server process: Python's
``elasticsearch`` 9.x (the dev extra) and 8.x (a venv of its own, made here from PyPI),
``opensearch-py``, and Node.js's ``@elastic/elasticsearch`` (installed here with npm). Each
sends one batch twice, with the publish token in a different form, then the per-item results and
``/stats`` are checked: the second send stores nothing new."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.elastic import Door, elastic_server, results

CLIENTS = Path(__file__).parent / "clients"
TOKEN = "s3cret-shipper-token"
FIRST = [["create", 201, "created"]] * 5 + [["index", 201, "created"]] * 5
SECOND = [["create", 409, "version_conflict_engine_exception"]] * 5 + [["index", 200, "noop"]] * 5


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with elastic_server(tmp_path_factory.mktemp("elastic"), token=TOKEN) as door:
        yield door
        door.assert_healthy()
        # The clients called nothing but GET / (their info()) and the bulk paths: no start-up
        # call of theirs went unanswered.
        metrics = door.http.get("/metrics").text
        assert 'route="other"' not in metrics, metrics


@pytest.fixture(scope="module")
def python_es8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the 8.x client, which cannot share one with the 9.x of the dev extra."""
    venv = tmp_path_factory.mktemp("es8") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "elasticsearch>=8.13,<9"],
        check=True,
        timeout=600,
    )
    return python


@pytest.fixture(scope="module")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with @elastic/elasticsearch installed by npm and the client script in it.
    9.3.x: it supports node 18 and later (Debian 12's nodejs); 9.5 asks for node 22."""
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed (.ci/run)"
    work = tmp_path_factory.mktemp("node")
    (work / "package.json").write_text('{"name": "bulk-door-test", "private": true}\n')
    subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "@elastic/elasticsearch@~9.3"],
        cwd=work,
        check=True,
        timeout=600,
    )
    shutil.copy(CLIENTS / "es_node.mjs", work)
    return work / "es_node.mjs"


def run_python(door: Door, python: Path | str, index: str, kind: str, auth: str) -> dict:
    script = str(CLIENTS / "es_python.py")
    done = subprocess.run(
        [str(python), script, door.url, index, kind, auth, door.token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    output: dict = results(done.stdout)
    return output


def check(door: Door, index: str, output: dict, before: tuple[int, ...]) -> None:
    assert output["sends"] == [FIRST, SECOND]
    after = door.counters()
    assert [a - b for a, b in zip(after, before, strict=True)] == [20, 10, 10]
    events = door.events(index)
    assert len(events) == 10
    with_id = [e for e in events if e["event_id"].startswith("doc-")]
    assert [(e["source"], e["timestamp"]) for e in with_id] == [
        ("web-1", "2026-11-30T10:00:00Z")
    ] * 5
    hashed = [e for e in events if not e["event_id"].startswith("doc-")]
    assert {len(e["event_id"]) for e in hashed} == {32} and {e["source"] for e in hashed} == {"api"}
    assert hashed[0]["timestamp"] == "2026-11-30T10:00:00Z"  # epoch milliseconds


def test_python_elasticsearch_9(door: Door) -> None:
    before = door.counters()
    output = run_python(door, sys.executable, "py-es9", "elasticsearch", "api_key")
    assert output["version"].startswith("9.")  # it asked with compatible-with=9
    check(door, "py-es9", output, before)


def test_python_elasticsearch_8(door: Door, python_es8: Path) -> None:
    before = door.counters()
    output = run_python(door, python_es8, "py-es8", "elasticsearch", "basic")
    assert output["version"].startswith("8.")
    check(door, "py-es8", output, before)


def test_python_elasticsearch_9_with_a_bearer_token(door: Door) -> None:
    before = door.counters()
    output = run_python(door, sys.executable, "py-bearer", "elasticsearch", "bearer")
    check(door, "py-bearer", output, before)


def test_opensearch_py(door: Door) -> None:
    before = door.counters()
    output = run_python(door, sys.executable, "opensearch", "opensearch", "basic")
    check(door, "opensearch", output, before)


def test_node_elasticsearch(door: Door, node_client: Path) -> None:
    before = door.counters()
    done = subprocess.run(
        ["node", str(node_client), door.url, "node-es", door.token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    output = results(done.stdout)
    # helpers.bulk sent the five hashed documents a third time: five duplicates, all successful.
    assert output["helper"] == {"total": 5, "successful": 5, "failed": 0}
    before = tuple(b + d for b, d in zip(before, (5, 0, 5), strict=True))
    check(door, "node-es", output, before)
    assert door.metric('aggregator_publish_events_total{protocol="elasticsearch",result="stored"}')


def test_a_wrong_token_is_401_in_every_form(door: Door) -> None:
    import base64

    body = b'{"index":{"_index":"x"}}\n{"a":1}\n'
    basic = base64.b64encode(b"shipper:wrong").decode()
    for header in ("Bearer wrong", "ApiKey wrong", f"Basic {basic}", "Basic !!", ""):
        headers = {"Content-Type": "application/x-ndjson"}
        if header:
            headers["Authorization"] = header
        response = door.http.post("/_bulk", content=body, headers=headers)
        assert response.status_code == 401, header
    assert door.http.get("/").status_code == 401
    assert door.events("x") == []
