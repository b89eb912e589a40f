"""The atheris process for one decoder: ``python -m fuzz.harness TARGET ARTIFACTS [FLAGS]``.

Run by ``python -m fuzz.decoders``, which reads its figures. The decoders are imported under
atheris' instrumentation (coverage of their Python code and of the comparisons it makes guide
the mutations; msgspec and zlib are C and are fuzzed through them, not inside). Each input is
checked against the decoder contract (``fuzz.contract``). A violation does not stop the run: the
first input of each kind of violation is saved in ARTIFACTS (named by its signature), the line
``violation: …`` is printed, and fuzzing goes on, so one run counts every distinct finding.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["aggregator.decoders"]):
    from fuzz import inputs, targets
from fuzz.contract import Violation, check


def main(argv: list[str]) -> None:
    name, artifacts = argv[1], Path(argv[2])
    target = targets.target(name)
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        body, headers = inputs.decode(target, data)
        try:
            check(target.decode, body, headers, targets.LIMITS, allows_empty=target.allows_empty)
        except Violation as violation:
            if violation.signature in seen:
                return
            seen.add(violation.signature)
            digest = hashlib.sha1(violation.signature.encode()).hexdigest()[:12]
            (artifacts / f"{name}-{digest}").write_bytes(data)
            print(f"violation: {name}-{digest}: {violation}", file=sys.stderr, flush=True)

    atheris.Setup([argv[0], *argv[3:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
