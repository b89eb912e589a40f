"""``python -m mutation.deliberate``: each deliberate bug of ``mutation/bugs.py``, alone, in a
scratch copy of the work tree; its tests must pass without it and fail with it.

Prints the table that docs/development.md shows, and exits 1 when a bug is not caught, when an
edit no longer applies (the code moved on: write the bug again), or when the tests fail
without any bug. The scratch copy is what ``git ls-files`` lists (tracked and untracked, not
ignored), so the virtualenv and the stores are not copied; its tests import the copy.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mutation.bugs import BUGS, Bug

ROOT = Path(__file__).resolve().parent.parent
FAILED = re.compile(r"^FAILED (\S+)", re.MULTILINE)


def copy_tree(root: Path, into: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def run_tests(tree: Path, tests: Sequence[str]) -> tuple[int, set[str], str]:
    """pytest in ``tree`` importing the copy: exit code, the failed node ids, the output."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return result.returncode, set(FAILED.findall(result.stdout)), result.stdout


def apply(tree: Path, bug: Bug) -> dict[Path, str]:
    """The bug's edits in ``tree``; the original text of each file changed."""
    originals: dict[Path, str] = {}
    for edit in bug.edits:
        path = tree / edit.path
        text = path.read_text()
        originals.setdefault(path, text)
        if text.count(edit.old) != 1:
            raise LookupError(f"{edit.path}: the text to change is no longer there once")
        path.write_text(text.replace(edit.old, edit.new))
    return originals


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(prog="python -m mutation.deliberate", description=__doc__)
    options.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = options.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="deliberate-"))
    began = time.monotonic()
    try:
        copy_tree(ROOT, scratch)
        every = sorted({test for bug in BUGS for test in bug.tests})
        code, failed, output = run_tests(scratch, every)
        if code != 0:
            print(output[-4000:])
            print("the tests fail without any deliberate bug: fix them first")
            return 1
        rows, problems = [], 0
        for bug in BUGS:
            try:
                originals = apply(scratch, bug)
            except LookupError as exc:
                rows.append((bug, f"does not apply ({exc})"))
                problems += 1
                continue
            try:
                code, failed, output = run_tests(scratch, bug.tests)
            finally:
                for path, text in originals.items():
                    path.write_text(text)
            if code == 1 and failed:
                names = ", ".join(f"`{t.split('::')[-1]}`" for t in sorted(failed))
                rows.append((bug, f"**yes**: {names}"))
            else:
                rows.append((bug, f"**NO** (pytest exit {code})"))
                problems += 1
        print("| promise | deliberate bug | caught? (tests that fail) |")
        print("| --- | --- | --- |")
        for bug, verdict in rows:
            print(f"| {bug.promise} | {bug.bug} | {verdict} |")
        print(
            f"\n{len(BUGS) - problems} of {len(BUGS)} deliberate bugs caught; the same tests "
            f"pass without them ({time.monotonic() - began:.0f} s)"
        )
        return 1 if problems else 0
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
