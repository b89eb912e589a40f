"""``python -m mutation.score``: mutmut's results per module, with the equivalent mutants set apart.

Run after ``mutmut run`` (``make mutation`` does both). A mutant is *killed* when a test failed
or timed out with it, *survived* when every test that reaches its function passed, *untested*
when no test of the selection reaches that function. The score is killed / (all − equivalent);
an equivalent mutant (``mutation/equivalent.py``) behaves exactly like the original, so no test
can kill it. Exits 1 below ``TARGET``; ``--survivors`` shows each surviving change.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import tomllib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mutation.equivalent import why_equivalent

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.90
# mutmut's exit codes (mutmut/stats.py): a test failed, or pytest stopped on an internal error.
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
UNTESTED = {5, 33}


@dataclass(frozen=True, slots=True)
class Mutant:
    path: str
    name: str  # mutmut's, e.g. aggregator.store.sqlite.xǁSQLiteStoreǁcommit__mutmut_41
    status: str
    before: str  # the original line(s) it changes, stripped
    after: str

    @property
    def function(self) -> str:
        return self.name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0].lstrip("x").strip("_ǁ")


def mutated_paths() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    patterns: list[str] = config["only_mutate"]
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "aggregator").rglob("*.py")
        if any(fnmatch.fnmatch(str(path.relative_to(ROOT)), p) for p in patterns)
    )


def changed_lines(functions: dict[str, str], name: str) -> tuple[str, str]:
    """The lines a mutant changes: its function against the original, as mutmut wrote both."""
    short = name.rsplit(".", 1)[1]
    orig_name = short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    original = functions.get(orig_name, "").replace(orig_name, "f")
    mutant = functions.get(short, "").replace(short, "f")
    before, after = original.splitlines(), mutant.splitlines()
    removed, added = [], []
    # Opcodes, not ndiff: ndiff's fuzzy matching of similar lines takes minutes on long functions.
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after).get_opcodes():
        if tag != "equal":
            removed += [line.strip() for line in before[i1:i2]]
            added += [line.strip() for line in after[j1:j2]]
    return " ".join(removed), " ".join(added)


def mutants(path: str) -> Iterator[Mutant]:
    meta = ROOT / "mutants" / f"{path}.meta"
    if not meta.exists():
        return
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    source = (ROOT / "mutants" / path).read_text()
    lines = source.splitlines()  # once: ast.get_source_segment splits the file at each call
    functions = {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for name, code in codes.items():
        if code in KILLED or code in TIMEOUT:
            status = "killed"
        elif code == 0:
            status = "survived"
        elif code in UNTESTED:
            status = "untested"
        else:
            status = "not run" if code is None else f"suspicious ({code})"
        before, after = changed_lines(functions, name) if status != "killed" else ("", "")
        mutant = Mutant(path, name, status, before, after)
        if status in ("survived", "untested") and why_equivalent(mutant.path, before, after):
            mutant = Mutant(path, name, "equivalent", before, after)
        yield mutant


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(prog="python -m mutation.score", description=__doc__)
    options.add_argument("--survivors", action="store_true", help="show each surviving change")
    options.add_argument("--equivalent", action="store_true", help="show the equivalent ones")
    args = options.parse_args(argv)
    rows, every = [], []
    for path in mutated_paths():
        found = list(mutants(path))
        if found:
            rows.append((path, Counter(m.status for m in found)))
            every += found
    if not every:
        print("no mutmut results: run `mutmut run` (or `make mutation`) first")
        return 1
    print("| module | mutants | killed | survived | untested | equivalent | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    total = Counter(m.status for m in every)
    for path, counts in [*rows, ("**all**", total)]:
        scored = sum(counts.values()) - counts["equivalent"]
        score = counts["killed"] / scored if scored else 1.0
        print(
            f"| {path} | {sum(counts.values())} | {counts['killed']} | {counts['survived']} | "
            f"{counts['untested']} | {counts['equivalent']} | {score:.1%} |"
        )
    shown = {"survived", "untested"} if args.survivors else set()
    shown |= {"equivalent"} if args.equivalent else set()
    for mutant in every:
        if mutant.status in shown:
            reason = why_equivalent(mutant.path, mutant.before, mutant.after) or mutant.status
            print(f"\n{mutant.name} ({reason})\n  - {mutant.before}\n  + {mutant.after}")
    others = {s: n for s, n in total.items() if s not in ("killed", "survived", "untested")}
    if set(others) - {"equivalent"}:
        print(f"\nnot scored: {others}")
    scored = sum(total.values()) - total["equivalent"]
    score = total["killed"] / scored
    print(f"\nscore {score:.1%} (target {TARGET:.0%}): {total['killed']} of {scored} killed")
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
