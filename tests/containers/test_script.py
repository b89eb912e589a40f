"""containers/test.sh itself: a second run beside this one, killed the way a CI timeout kills
(SIGTERM to its process group), leaves nothing of its own; a user who may not use the engine is
told so in one line."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.containers.engine import PROJECT_LABEL, Engine, lines_of
from tests.support import ROOT

BUILT = re.compile(rb"image pubsub-aggregator:(aggtest-[0-9a-f]+) built")
NOBODY = "65534"
SCRIPT = ("bash", "containers/test.sh")


def test_a_run_killed_by_sigterm_leaves_nothing_of_its_own(engine: Engine) -> None:
    since = f"{time.time():.6f}"
    # Its own engine settings only: the outer run's tag is not handed down.
    env = {k: v for k, v in engine.env.items() if k not in ("IMAGE_TAG", "DOCKER")}
    run = subprocess.Popen(
        [*SCRIPT, "-x", "tests/containers/test_compose_story.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, tag = read_until(run, BUILT, timeout=300)
        # Killed once its first story has a running container: the aggregator, whose
        # `restart: unless-stopped` would bring it back after every engine restart if left.
        watch = [
            *(engine.docker, "events", "--since", since, "--filter", "event=start"),
            *("--format", f'{{{{index .Actor.Attributes "{PROJECT_LABEL}"}}}}'),
        ]
        for project in lines_of(watch, engine.env, 180, "no container of the second run started"):
            if project.startswith(f"{tag}-"):
                break
        os.killpg(run.pid, signal.SIGTERM)
        rest, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    output += rest
    assert run.returncode == 143, output.decode()
    label = f'{{{{.Label "{PROJECT_LABEL}"}}}}'
    left = [
        name
        for kind in (["ps", "-a"], ["volume", "ls"], ["network", "ls"])
        for name in engine.run(
            *kind, "--filter", f"label={PROJECT_LABEL}", "--format", label
        ).stdout.split()
        if name.startswith(f"{tag}-")
    ]
    assert left == [], output.decode()
    assert b"a killed story left behind" in output, output.decode()
    images = engine.run("image", "ls", "-q", f"pubsub-aggregator:{tag}").stdout.split()
    assert images == []


def test_a_user_who_may_not_use_the_engine_is_told_so(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to run the script as another user")
    env = {k: v for k, v in engine.env.items() if k not in ("IMAGE_TAG", "DOCKER", "CI")}

    # The script alone, where that user can read it: a checkout may sit in a directory only
    # root may enter (a fresh clone in `mktemp -d`), and before the engine check the script
    # reads nothing else.
    copy = Path(tempfile.mkdtemp(prefix="test-sh-"))
    copy.chmod(0o755)
    (copy / "containers").mkdir(mode=0o755)
    shutil.copy(ROOT / "containers" / "test.sh", copy / "containers" / "test.sh")
    request.addfinalizer(lambda: shutil.rmtree(copy))

    def run_as_nobody(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *SCRIPT],
            cwd=copy,
            env={**env, "HOME": "/nonexistent", **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run_as_nobody()
    assert done.returncode == 0, done  # a skip, said in one line
    said = [line for line in done.stdout.splitlines() if "skipped" in line]
    assert len(said) == 1, done
    assert "an engine runs, but this user may not use it (permission denied" in said[0]
    assert said[0].endswith("join the docker group or run as root")
    # In CI the same reason is a failure: a story that cannot run must not pass as skipped.
    failed = run_as_nobody(CI="true")
    assert failed.returncode == 1, failed
    told = failed.stderr.strip().splitlines()
    assert len(told) == 1 and told[0].startswith("test-containers: FAILED:"), failed
    assert told[0].endswith("join the docker group or run as root")


def read_until(
    run: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float
) -> tuple[bytes, str]:
    """``run``'s output until ``pattern`` shows (before ``timeout``): (output, its group 1)."""
    assert run.stdout is not None
    deadline = time.monotonic() + timeout
    output = b""
    while not (found := pattern.search(output)):
        ready, _, _ = select.select([run.stdout], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(run.stdout.fileno(), 65536) if ready else b""
        assert chunk, f"no {pattern.pattern!r} within {timeout} s:\n{output.decode()}"
        output += chunk
    return output, found.group(1).decode()
