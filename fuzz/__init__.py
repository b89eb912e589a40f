"""Fuzzing of the wire decoders and of a real server (issue 18).

- ``python -m fuzz.decoders``: coverage-guided (atheris) fuzzing of each decoder against the one
  decoder contract (``fuzz/contract.py``), seeded from ``fuzz/corpus/<decoder>/``.
- ``python -m fuzz.server``: a mutation campaign over HTTP against ``python -m aggregator``.

Adding a decoder: one ``Target`` in ``fuzz/targets.py`` and its seeds; see that module.
"""
